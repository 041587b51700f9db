"""The account of an API key: ``GET /v1/account``, buying credits, and a small ``/account`` page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from billing import AccountInfo, KeyInfo, PaymentsNotConfigured, Usage, format_credits
from billing.accounts import period_bounds
from billing.errors import InsufficientScope

from ..deps import AccountKeyDep, AccountWriteKeyDep, BillingDep, SettingsDep
from ..openapi import CLIP_HEADERS, metered, problem_responses

router = APIRouter(tags=["account"])


def _credits(milli: int) -> float:
    return milli / 1000


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _key(info: KeyInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "display": info.display,
        "mode": info.mode,
        "scopes": list(info.scopes),
        "created_at": _time(info.created_at),
        "last_used_at": _time(info.last_used_at),
        "revoked": info.revoked,
    }


def account_body(account: AccountInfo, usage: Usage, key: KeyInfo, keys: list[KeyInfo], billing: Any) -> dict[str, Any]:
    plan = billing.catalogue.plan(account.plan)
    balance = account.balance
    _, resets = period_bounds(balance.period)
    body: dict[str, Any] = {
        "id": account.id,
        "name": account.name,
        "plan": {
            "name": plan.name,
            "description": plan.description,
            "monthly_credits": _credits(plan.monthly_credits),
            "pay_as_you_go": plan.metered,
            "rate_limit": {
                "requests_per_second": plan.rate,
                "burst": plan.burst,
                "concurrency": plan.concurrency,
            },
        },
        "balance": {
            "credits": _credits(balance.prepaid),
            "monthly_credits": _credits(balance.free_credits),
            "purchased_credits": _credits(balance.credits),
            "remaining": _credits(balance.remaining),
            "period": balance.period,
            "monthly_credits_reset_at": datetime.fromtimestamp(resets, UTC).isoformat(),
        },
        "usage": {
            "period": usage.period,
            "requests": usage.requests,
            "credits": _credits(usage.credits),
            "by_operation": usage.by_operation,
            "test_requests": usage.test_requests,
        },
        "suspended": account.suspended,
        "suspended_reason": account.suspended_reason,
        "key": _key(key),
        "keys": [_key(k) for k in keys],
        "credit_packs": [
            {"name": p.name, "credits": _credits(p.credits), "price": p.amount / 100, "currency": p.currency}
            for p in billing.catalogue.packs.values()
        ],
    }
    if plan.metered:
        body["pay_as_you_go"] = {
            "credits_used": _credits(balance.metered_used),
            "monthly_limit": _credits(balance.metered_limit),
            "reported_as": "Stripe Billing Meter events, billed monthly",
        }
    return body


@router.get(
    "/v1/account",
    operation_id="getAccount",
    responses=metered(
        {200: {"description": "The account.", "headers": {"X-Credits-Remaining": CLIP_HEADERS["X-Credits-Remaining"]}}},
        problem_responses(401, 402, 403, 404, 422, 429, 503),
    ),
)
async def get_account(key: AccountKeyDep, billing: BillingDep) -> JSONResponse:
    """The key's account: plan, balance, this month's usage, and its keys (never their secrets)."""
    account = await billing.accounts.get(key.account_id)
    usage = await billing.accounts.usage(key.account_id)
    keys = await billing.keys.list(key.account_id)
    body = account_body(account, usage, key, keys, billing)
    return JSONResponse(body, headers={"X-Credits-Remaining": format_credits(account.balance.remaining)})


class CheckoutBody(BaseModel):
    pack: str | None = Field(default=None, description="a credit pack to buy (GET /v1/account lists them)")
    plan: str | None = Field(default=None, description="a pay-as-you-go plan to subscribe to")
    success_url: str | None = None
    cancel_url: str | None = None


@router.post(
    "/v1/account/checkout",
    status_code=201,
    operation_id="checkout",
    responses=metered(problem_responses(400, 401, 402, 403, 404, 413, 422, 429, 502, 503)),
)
async def checkout(
    body: CheckoutBody, request: Request, key: AccountWriteKeyDep, billing: BillingDep, settings: SettingsDep
) -> dict[str, str]:
    """A Stripe Checkout Session for a credit pack or a pay-as-you-go subscription: send the user to ``url``."""
    if key.test:
        raise InsufficientScope("Test-mode keys cannot buy credits; use a live key.", "account:write")
    if billing.checkout is None:
        raise PaymentsNotConfigured("Payments are not configured on this server (ARCLIP_STRIPE_API_KEY).")
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    success = body.success_url or f"{base}/account?checkout=success"
    cancel = body.cancel_url or f"{base}/account?checkout=cancelled"
    if body.plan and not body.pack:
        session = await billing.checkout.subscribe(key.account_id, body.plan, success_url=success, cancel_url=cancel)
    else:
        session = await billing.checkout.buy_pack(
            key.account_id, body.pack or "starter", success_url=success, cancel_url=cancel
        )
    return {"id": session.id, "url": session.url}


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>arclip account</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
input{font:inherit;width:100%;padding:.4rem;box-sizing:border-box}button{font:inherit;padding:.3rem .8rem;margin:.2rem}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.2rem .4rem;border-bottom:1px solid #ddd}
.error{color:#b00}.muted{color:#777}
</style></head><body>
<h1>arclip account</h1>
<form id="login"><label>API key <input id="key" type="password" autocomplete="off" placeholder="arc_live_…"></label>
<button>Show</button> <span class="muted">The key stays in this page; it is sent only to this server.</span></form>
<p id="error" class="error" role="alert"></p>
<div id="account" hidden>
<h2 id="name"></h2>
<p>Plan <b id="plan"></b>: <span id="plan-description"></span></p>
<p><b id="remaining"></b> credits left (<span id="monthly"></span> of this month's, <span id="purchased"></span> bought).</p>
<p>This month (<span id="period"></span>): <b id="requests"></b> images, <b id="used"></b> credits;
<span id="test"></span> test-mode requests.</p>
<p id="suspended" class="error" hidden>Suspended: a payment failed. Keys work again once the invoice is paid.</p>
<h3>Buy credits</h3><div id="packs"></div>
<h3>Keys</h3>
<table><thead><tr><th>key</th><th>name</th><th>mode</th><th>last used</th><th>state</th></tr></thead><tbody id="keys"></tbody></table>
</div>
<script>
const $ = (id) => document.getElementById(id);
function row(cells) { const tr = document.createElement("tr");
  for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.append(td); } return tr; }
async function call(path, init) {
  const r = await fetch(path, {...init, headers: {"X-Api-Key": $("key").value.trim(), "Content-Type": "application/json"}});
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}
async function show() {
  $("error").textContent = "";
  try {
    const a = await call("/v1/account");
    $("name").textContent = a.name; $("plan").textContent = a.plan.name;
    $("plan-description").textContent = a.plan.description;
    $("remaining").textContent = a.balance.remaining; $("monthly").textContent = a.balance.monthly_credits;
    $("purchased").textContent = a.balance.purchased_credits; $("period").textContent = a.usage.period;
    $("requests").textContent = a.usage.requests; $("used").textContent = a.usage.credits;
    $("test").textContent = a.usage.test_requests; $("suspended").hidden = !a.suspended;
    $("packs").replaceChildren(...a.credit_packs.map((p) => { const b = document.createElement("button");
      b.textContent = `${p.credits} credits, ${p.price} ${p.currency.toUpperCase()}`;
      b.onclick = async () => { try { const s = await call("/v1/account/checkout",
        {method: "POST", body: JSON.stringify({pack: p.name})}); location.href = s.url; }
        catch (e) { $("error").textContent = e.message; } }; return b; }));
    $("keys").replaceChildren(...a.keys.map((k) => row([k.display, k.name, k.mode, k.last_used_at || "never",
      k.revoked ? "revoked" : "active"])));
    $("account").hidden = false;
  } catch (e) { $("account").hidden = true; $("error").textContent = e.message; }
}
$("login").onsubmit = (e) => { e.preventDefault(); show(); };
</script></body></html>
"""


@router.get("/account", response_class=HTMLResponse, include_in_schema=False)
async def account_page() -> HTMLResponse:
    """A page that asks for an API key and shows its account (through ``GET /v1/account``)."""
    return HTMLResponse(_PAGE, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
