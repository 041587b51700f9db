"""Plans, credit packs, prices and credit amounts.

Amounts are integers in **millicredits** everywhere (1 credit = 1000): a preview
costs 250, a full-size image 1000, and sums never drift as floats would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from .errors import InvalidAmount, UnknownPack, UnknownPlan, echo

MILLI = 1000

# What each billable operation costs, in millicredits.
PRICES: dict[str, int] = {
    "clip": 1 * MILLI,  # a full-size (or auto) image
    "clip.preview": MILLI // 4,  # a preview (about 0.25 MP)
}


def to_milli(credits: float | str | Decimal) -> int:
    """Credits (``1``, ``0.25``, ``"2.5"``) as millicredits; at most three decimals."""
    try:
        value = Decimal(str(credits))
    except InvalidOperation as exc:
        raise InvalidAmount(f"{echo(credits)!r} is not a number of credits.") from exc
    if not value.is_finite():
        raise InvalidAmount(f"{echo(credits)!r} is not a number of credits.")
    milli = value * MILLI
    if milli != milli.to_integral_value():
        raise InvalidAmount(f"{echo(credits)!r} has more than three decimals.")
    return int(milli)


def format_credits(milli: int) -> str:
    """Millicredits as the shortest decimal: 1000 -> "1", 250 -> "0.25", 0 -> "0"."""
    text = format((Decimal(milli) / MILLI).quantize(Decimal("0.001"), ROUND_HALF_UP), "f")
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text in ("-0", "") else text


def credits_text(milli: int) -> str:
    """Millicredits in words: "1 credit", "0.25 credits", "250 credits"."""
    return f"{format_credits(milli)} credit{'' if milli == MILLI else 's'}"


def credits_value(milli: int) -> float:
    """Millicredits as a JSON number of credits."""
    return milli / MILLI


@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    monthly_credits: int  # millicredits granted each calendar month (UTC); unused ones lapse
    metered: bool = False  # usage beyond the balance is billed (pay-as-you-go)
    metered_limit: int = 0  # millicredits of metered usage a month may reach (a spending cap)
    rate: float = 5.0  # requests per second, refilled continuously
    burst: int = 10  # the bucket's size: requests that may come at once
    concurrency: int = 2  # requests of one key running at once

    def with_overrides(self, overrides: Mapping[str, Any]) -> Plan:
        values = dict(overrides)
        for name in ("monthly_credits", "metered_limit"):
            if name in values:
                values[name] = to_milli(values[name])
        unknown = set(values) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise UnknownPlan(f"Plan {self.name!r} has no setting {echo(sorted(unknown)[0])!r}.")
        return dataclasses.replace(self, **values)


@dataclass(frozen=True)
class CreditPack:
    """Prepaid credits bought through Stripe Checkout; they never lapse."""

    name: str
    credits: int  # millicredits
    amount: int  # price in the currency's minor unit (cents)
    currency: str = "usd"
    price_id: str | None = None  # a Stripe Price to use instead of an inline price


DEFAULT_PLANS: dict[str, Plan] = {
    "free": Plan(
        "free", "50 credits every month.", monthly_credits=50 * MILLI, rate=2.0, burst=10, concurrency=2
    ),
    "prepaid": Plan(
        "prepaid",
        "50 credits every month, plus the credit packs bought (they never lapse).",
        monthly_credits=50 * MILLI,
        rate=10.0,
        burst=40,
        concurrency=8,
    ),
    "payg": Plan(
        "payg",
        "Pay as you go: the balance first, then every credit is billed monthly.",
        monthly_credits=0,
        metered=True,
        metered_limit=100_000 * MILLI,
        rate=20.0,
        burst=80,
        concurrency=16,
    ),
}

DEFAULT_PACKS: dict[str, CreditPack] = {
    "starter": CreditPack("starter", credits=1_000 * MILLI, amount=1_000),
    "growth": CreditPack("growth", credits=10_000 * MILLI, amount=8_000),
    "scale": CreditPack("scale", credits=100_000 * MILLI, amount=60_000),
}


@dataclass(frozen=True)
class Catalogue:
    plans: Mapping[str, Plan] = dataclasses.field(default_factory=lambda: dict(DEFAULT_PLANS))
    packs: Mapping[str, CreditPack] = dataclasses.field(default_factory=lambda: dict(DEFAULT_PACKS))

    def plan(self, name: str) -> Plan:
        try:
            return self.plans[name]
        except KeyError:
            raise UnknownPlan(f"No plan {echo(name)!r}; plans: {', '.join(sorted(self.plans))}.") from None

    def pack(self, name: str) -> CreditPack:
        try:
            return self.packs[name]
        except KeyError:
            raise UnknownPack(f"No credit pack {echo(name)!r}; packs: {', '.join(sorted(self.packs))}.") from None

    @classmethod
    def build(
        cls, plans: Mapping[str, Mapping[str, Any]] | None = None, packs: Mapping[str, Mapping[str, Any]] | None = None
    ) -> Catalogue:
        """The default plans with per-field overrides, and the packs (``None``: the defaults).

        ``plans={"free": {"monthly_credits": 100}}`` changes one field; a plan not among
        the defaults needs every field it does not want defaulted (``monthly_credits``).
        """
        merged = dict(DEFAULT_PLANS)
        for name, fields in (plans or {}).items():
            base = merged.get(name) or Plan(name, str(fields.get("description", name)), monthly_credits=0)
            merged[name] = base.with_overrides(fields)
        if packs is None:
            pack_table = dict(DEFAULT_PACKS)
        else:
            pack_table = {}
            for name, fields in packs.items():
                values = dict(fields)
                values["credits"] = to_milli(values["credits"])
                pack_table[name] = CreditPack(name=name, **values)
        return cls(plans=merged, packs=pack_table)
