"""The ``arclip`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .settings import Settings

app = typer.Typer(help="arclip: AR cut-and-paste, and the clipping API.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
accounts_app = typer.Typer(help="Manage billing accounts.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the whole product in one process."""
    import logging

    import uvicorn

    from segmentation import ModelError, resolve_model

    from .app import create_app

    settings = Settings()
    try:
        resolve_model(settings.model)  # a bad ARCLIP_MODEL is a clear error, not a traceback
    except ModelError as exc:
        _fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        timeout_graceful_shutdown=10,
        log_level="info",
    )


@app.command()
def clip(
    inputs: Annotated[list[Path], typer.Argument(help="Images to clip.", exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file (one input) or folder (several).")],
    format: Annotated[str, typer.Option("--format", help="png or webp.")] = "png",
    channels: Annotated[str, typer.Option("--channels", help="rgba, or alpha for the grey mask.")] = "rgba",
    crop: Annotated[bool, typer.Option("--crop", help="Crop to the object.")] = False,
    crop_margin: Annotated[str, typer.Option("--crop-margin", help="Margin around a crop: px or %.")] = "0",
    size: Annotated[str, typer.Option("--size", help="preview, full or auto.")] = "full",
    bg_color: Annotated[Optional[str], typer.Option("--bg-color", help="Hex background colour.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Registry name or path to an .onnx file.")] = None,
) -> None:
    """Clip images offline."""
    from segmentation import InputError, ModelError

    from .offline import clip_files

    settings = Settings()
    try:
        failures = asyncio.run(
            clip_files(
                settings,
                inputs,
                output,
                model=model,
                options=dict(
                    format=format, channels=channels, crop=crop, crop_margin=crop_margin, size=size, bg_color=bg_color
                ),
            )
        )
    except (ModelError, InputError) as exc:
        _fail(exc.detail)
    except ValueError as exc:
        _fail(str(exc))
    if failures:
        raise typer.Exit(1)


@app.command()
def locate(
    view: Annotated[Optional[Path], typer.Option("--view", help="Phone photo of the screen.")] = None,
    screen: Annotated[Optional[Path], typer.Option("--screen", help="The screen's own picture.")] = None,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="JSON lines of {view, screen}.")] = None,
) -> None:
    """Find the screen point under the centre of a phone photo of the screen."""
    from .offline import locate_pairs

    if pairs is not None:
        if view or screen:
            _fail("use either --pairs or --view with --screen")
        locate_pairs(pairs.read_text().splitlines(), sys.stdout)
        return
    if view is None or screen is None:
        _fail("--view and --screen are both required (or --pairs FILE.jsonl)")
    locate_pairs([json.dumps({"view": str(view), "screen": str(screen)})], sys.stdout)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="What the key is for (and the new account's name).")],
    plan: Annotated[Optional[str], typer.Option("--plan", help="The new account's plan: free, prepaid, payg.")] = None,
    credits: Annotated[Optional[str], typer.Option("--credits", help="Credits granted (never lapse), e.g. 100 or 2.5.")] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="Add the key to this account instead.")] = None,
    test: Annotated[bool, typer.Option("--test", help="A test-mode key (arc_test_…): works, never billed.")] = False,
    scope: Annotated[Optional[list[str]], typer.Option("--scope", help="Limit the key to a scope (repeatable).")] = None,
) -> None:
    """Create an API key (and an account for it) and print it: the only time it is shown."""
    from billing import BillingError, to_milli

    from .offline import with_accounts

    async def run():  # type: ignore[no-untyped-def]
        async with with_accounts(Settings()) as (keys, accounts):
            grant = to_milli(credits) if credits is not None else 0
            if account is None:
                return await keys.create(name, plan or "free", credits=grant, mode="test" if test else "live",
                                         scopes=scope or None)
            if plan is not None:
                await accounts.set_plan(account, plan)
            if grant:
                await accounts.grant(account, grant)
            return await keys.create(name, account_id=account, mode="test" if test else "live", scopes=scope or None)

    try:
        info, secret = asyncio.run(run())
    except BillingError as exc:
        _fail(exc.detail)
    typer.echo(secret)
    typer.secho(
        f"{info.id} ({info.name}, account {info.account_id}, plan {info.plan}, {info.mode}): "
        "store the key now; it cannot be shown again.",
        err=True,
    )


@keys_app.command("list")
def keys_list(
    account: Annotated[Optional[str], typer.Option("--account", help="Only this account's keys.")] = None,
) -> None:
    """List API keys (never their secrets)."""
    from .offline import with_keys

    async def run():  # type: ignore[no-untyped-def]
        async with with_keys(Settings()) as keys:
            return await keys.list(account)

    for info in asyncio.run(run()):
        state = "revoked" if info.revoked else "active"
        used = info.last_used_at.isoformat() if info.last_used_at else "never"
        typer.echo(
            f"{info.id}\t{info.display}\t{info.name}\t{info.plan}\t{state}\tlast used {used}"
            f"\t{info.account_id}\t{info.mode}\t{','.join(info.scopes)}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (from `arclip keys list`).")]) -> None:
    """Revoke an API key at once."""
    from billing import ApiKeyNotFound

    from .offline import with_keys

    async def run():  # type: ignore[no-untyped-def]
        async with with_keys(Settings()) as keys:
            return await keys.revoke(key_id)

    try:
        info = asyncio.run(run())
    except ApiKeyNotFound as exc:
        _fail(exc.detail)
    typer.echo(f"revoked {info.id} ({info.name})")


@accounts_app.command("list")
def accounts_list() -> None:
    """List accounts: plan, credits left, Stripe customer."""
    from billing import format_credits

    from .offline import with_accounts

    async def run():  # type: ignore[no-untyped-def]
        async with with_accounts(Settings()) as (_, accounts):
            return await accounts.list()

    for info in asyncio.run(run()):
        state = "suspended" if info.suspended else "active"
        typer.echo(
            f"{info.id}\t{info.name}\t{info.plan}\t{format_credits(info.balance.remaining)} credits\t{state}"
            f"\t{info.stripe_customer_id or '-'}"
        )


@accounts_app.command("credit")
def accounts_credit(
    account: Annotated[str, typer.Argument(help="The account's id (from `arclip accounts list`).")],
    credits: Annotated[str, typer.Argument(help="Credits to add (never lapse).")],
) -> None:
    """Grant credits to an account (recorded in its ledger)."""
    from billing import BillingError, format_credits, to_milli

    from .offline import with_accounts

    async def run():  # type: ignore[no-untyped-def]
        async with with_accounts(Settings()) as (_, accounts):
            return await accounts.grant(account, to_milli(credits))

    try:
        info = asyncio.run(run())
    except BillingError as exc:
        _fail(exc.detail)
    typer.echo(f"{info.id}: {format_credits(info.balance.remaining)} credits left")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
