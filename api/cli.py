"""The ``arclip`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import click
import typer
from typer.core import TyperGroup

from .settings import Settings

EXIT_CODES = (
    "Exit codes: 0 done; 1 the work failed (an image that cannot be clipped or located, a database or "
    "disk that cannot be used); 2 bad usage (an unknown option or a bad value, a file, model, key, account or "
    "plan that does not exist, a bad ARCLIP_ setting). Errors are one line on stderr, starting with 'error:'."
)


class _Commands(TyperGroup):
    """The top command group: a user's mistake or a failing service is one line, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise  # already said (``_fail``) or click's own usage errors: exit as they are
        except Exception as exc:
            known = _user_error(exc)
            if known is None:
                raise  # a bug of ours: the traceback is what a report needs
            _fail(*known)


# Plain help (rich_markup_mode=None): no "<bool>" after every flag; metavars say what a value is.
app = typer.Typer(
    cls=_Commands, help="arclip: AR cut-and-paste, and the clipping API.", epilog=EXIT_CODES, no_args_is_help=True,
    add_completion=False, rich_markup_mode=None, pretty_exceptions_show_locals=False,
)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(keys_app, name="keys")
accounts_app = typer.Typer(help="Manage billing accounts.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(accounts_app, name="accounts")
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _user_error(exc: Exception) -> tuple[str, int] | None:
    """The one line and exit code for an error that is not a bug, or None for a bug."""
    from pydantic import ValidationError

    from billing import BillingError
    from segmentation import InvalidOption, ModelError, SegmentationError

    from .faults import classify_fault
    from .migrations import SchemaError, UnknownRevision
    from .offline import CommandError

    if isinstance(exc, UnknownRevision):
        return exc.message, 2
    if isinstance(exc, SchemaError):  # a schema this release cannot run on: `arclip db upgrade` first
        return exc.message, 1
    fault = classify_fault(exc)
    if fault is not None:
        return f"{fault.detail.removesuffix('; retry shortly.').removesuffix('; retry later.')} ({_reason(exc)})", 1
    if isinstance(exc, (CommandError, ModelError, InvalidOption, BillingError)):
        return exc.detail, 2
    if isinstance(exc, SegmentationError):
        return exc.detail, 1
    if isinstance(exc, ValidationError):  # a bad ARCLIP_ setting
        first = exc.errors()[0]
        where = "ARCLIP_" + "_".join(str(p) for p in first["loc"]).upper()
        return f"{where}: {first['msg']}", 2
    if isinstance(exc, OSError):
        return (f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else _reason(exc)), 1
    return None


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@app.command()
def serve(
    host: Annotated[
        Optional[str],
        typer.Option(metavar="HOST", help="Interface to listen on (default 127.0.0.1; 0.0.0.0 with --tls)."),
    ] = None,
    port: Annotated[Optional[int], typer.Option(metavar="PORT", help="Port to listen on (default 8000).")] = None,
    tls: Annotated[
        bool,
        typer.Option("--tls", help="HTTPS with a local certificate (kept in the data dir) for phones on the LAN: "
                     "their live camera needs HTTPS."),
    ] = False,
    tls_name: Annotated[
        Optional[list[str]],
        typer.Option("--tls-name", metavar="NAME",
                     help="Another host name or address the certificate covers (repeatable), e.g. laptop.local."),
    ] = None,
) -> None:
    """Run the whole product in one process."""
    import logging

    import uvicorn

    from segmentation import resolve_model

    from .app import create_app
    from .database import create_schema

    settings = Settings()
    resolve_model(settings.model)  # a bad ARCLIP_MODEL is one line before anything starts
    # The schema likewise (the app checks it again at start: then it is current).
    _on_database(lambda engine: create_schema(engine, auto_migrate=settings.auto_migrate))
    if host is None:
        # A phone is the reason for --tls, and it is on the LAN, not on this machine's loopback.
        host = "0.0.0.0" if tls and "host" not in settings.model_fields_set else settings.host
    port = port or settings.port
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ssl: dict[str, str] = {}
    app_ = create_app(settings)
    if tls:
        app_, ssl = _tls(app_, settings, host, port, tls_name or [])
    elif host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho("note: phones get their live camera only over HTTPS; add --tls (see the README's pairing "
                    "section)", err=True)
    uvicorn.run(app_, host=host, port=port, timeout_graceful_shutdown=10, log_level="info", **ssl)


def _tls(app_, settings: Settings, host: str, port: int, extra: list[str]):  # type: ignore[no-untyped-def]
    """The app wrapped to hand out the CA certificate, and uvicorn's TLS arguments; says how a phone connects."""
    from urllib.parse import urlsplit

    from .tls import ServeCaCertificate, ensure_certificate, lan_addresses

    lan = lan_addresses() if host in ("0.0.0.0", "::") else []
    public = urlsplit(settings.public_url).hostname if settings.public_url else None
    cert = ensure_certificate(settings.data_dir / "tls", [host, *lan, *extra, *([public] if public else [])])
    reach = public or next(iter([*lan, *extra]), None) or ("127.0.0.1" if host in ("0.0.0.0", "::") else host)
    base = settings.public_url.rstrip("/") if settings.public_url else f"https://{reach}:{port}"
    typer.secho(
        f"HTTPS with arclip's local certificate for {', '.join(cert.names)}.\n"
        f"On this computer open {base}/canvas/ and scan its QR code with the phone (same network).\n"
        f"The phone trusts the connection once it trusts arclip's CA, {base}{ServeCaCertificate.path} "
        f"(SHA-256 {cert.fingerprint}; also {cert.ca}), or after accepting the browser's warning.",
        err=True,
    )
    return ServeCaCertificate(app_, cert.ca), {"ssl_certfile": str(cert.cert), "ssl_keyfile": str(cert.key)}


@app.command()
def clip(
    inputs: Annotated[
        list[Path], typer.Argument(help="Images to clip, or folders of images.", metavar="INPUT...", show_default=False)
    ],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", metavar="OUT",
                     help="Output file for one input file (its suffix, .png or .webp, picks the format); "
                     "a folder for several inputs or a folder."),
    ],
    recursive: Annotated[bool, typer.Option("-r", "--recursive", help="Also clip the images in subfolders.")] = False,
    format: Annotated[
        Optional[str],
        typer.Option("--format", metavar="png|webp", help="Output format; default: OUT's suffix, else png."),
    ] = None,
    channels: Annotated[
        str, typer.Option("--channels", metavar="rgba|alpha", help="rgba, or alpha for the grey mask.")
    ] = "rgba",
    crop: Annotated[bool, typer.Option("--crop", help="Crop to the object.")] = False,
    crop_margin: Annotated[
        str, typer.Option("--crop-margin", metavar="PX|PCT%", help="Margin around a crop: px or %.")
    ] = "0",
    size: Annotated[str, typer.Option("--size", metavar="preview|full|auto", help="Output size.")] = "full",
    bg_color: Annotated[
        Optional[str], typer.Option("--bg-color", metavar="HEX", help="Background colour (#rgb, #rrggbb, #rrggbbaa).")
    ] = None,
    quality: Annotated[
        str,
        typer.Option("--quality", metavar="fast|balanced|best",
                     help="Model runs per image: fast one; balanced the configured extra views "
                     "(ARCLIP_EXTRA_PASSES); best every view."),
    ] = "balanced",
    model: Annotated[
        Optional[str], typer.Option("--model", metavar="NAME|PATH", help="Registry name or path to an .onnx file.")
    ] = None,
) -> None:
    """Clip images offline: a file to a file, several files or folders to a folder (subfolders kept with -r).

    A cut-out needs transparency, so it is written as PNG or WebP; an output named .jpg is refused.
    """
    from .offline import clip_files

    failures = asyncio.run(
        clip_files(
            # Offline there is no load to shed: every image gets the views its quality asks for.
            Settings().model_copy(update={"load_aware_passes": False}),
            inputs,
            output,
            model=model,
            recursive=recursive,
            options=dict(
                format=format, channels=channels, crop=crop, crop_margin=crop_margin, size=size, bg_color=bg_color,
                quality=quality,
            ),
        )
    )
    if failures:
        _fail(f"{failures} image{'s' if failures != 1 else ''} could not be clipped (named above)", 1)


@app.command()
def locate(
    view: Annotated[Optional[Path], typer.Option("--view", metavar="FILE", help="Phone photo of the screen.")] = None,
    screen: Annotated[
        Optional[Path], typer.Option("--screen", metavar="FILE", help="The screen's own picture.")
    ] = None,
    pairs: Annotated[
        Optional[Path],
        typer.Option("--pairs", metavar="FILE.jsonl",
                     help='JSON lines of {"view": path, "screen": path}; - reads stdin. One JSON line out per line in, '
                     "an error object for a bad one."),
    ] = None,
) -> None:
    """Find the screen point under the centre of a phone photo of the screen; JSON on stdout."""
    from .offline import CommandError, locate_one, locate_pairs

    if pairs is not None:
        if view or screen:
            _fail("use either --pairs or --view with --screen")
        if str(pairs) == "-":
            failures = locate_pairs(sys.stdin, sys.stdout)
        else:
            if not pairs.is_file():
                raise CommandError(f"{pairs}: {'a folder, not a file' if pairs.is_dir() else 'no such file'}")
            with pairs.open(encoding="utf-8", errors="replace") as lines:
                failures = locate_pairs(lines, sys.stdout)
        if failures:
            _fail(f"{failures} line{'s' if failures != 1 else ''} of {pairs} could not be located (see their \"error\")", 1)
        return
    if view is None or screen is None:
        _fail("--view and --screen are both required (or --pairs FILE.jsonl)")
    typer.echo(json.dumps(locate_one(view, screen)))


def _print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell, under a header row (``--json`` is for scripts)."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    for row in (headers, *rows):
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="What the key is for (and the new account's name).")],
    plan: Annotated[
        Optional[str], typer.Option("--plan", metavar="PLAN", help="The new account's plan: free, prepaid, payg.")
    ] = None,
    credits: Annotated[
        Optional[str],
        typer.Option("--credits", metavar="N",
                     help="Credits granted, e.g. 100 or 2.5; they never lapse, and come on top of the plan's "
                     "monthly credits."),
    ] = None,
    account: Annotated[
        Optional[str], typer.Option("--account", metavar="ACCOUNT_ID", help="Add the key to this account instead.")
    ] = None,
    test: Annotated[bool, typer.Option("--test", help="A test-mode key (arc_test_…): works, never billed.")] = False,
    scope: Annotated[
        Optional[list[str]], typer.Option("--scope", metavar="SCOPE", help="Limit the key to a scope (repeatable).")
    ] = None,
) -> None:
    """Create an API key (and an account for it) and print it: the only time it is shown."""
    from billing import to_milli
    from billing.plans import credits_text

    from .offline import with_accounts

    async def run():  # type: ignore[no-untyped-def]
        async with with_accounts(Settings()) as (keys, accounts):
            grant = to_milli(credits) if credits is not None else 0
            if account is None:
                created = await keys.create(name, plan or "free", credits=grant, mode="test" if test else "live",
                                            scopes=scope or None)
            else:
                if plan is not None:
                    await accounts.set_plan(account, plan)
                if grant:
                    await accounts.grant(account, grant)
                created = await keys.create(name, account_id=account, mode="test" if test else "live",
                                            scopes=scope or None)
            return created, await accounts.get(created[0].account_id)

    (info, secret), holder = asyncio.run(run())
    typer.echo(secret)
    typer.secho(
        f"{info.id} ({info.name}, account {info.account_id}, plan {info.plan}, {info.mode}): "
        "store the key now; it cannot be shown again.",
        err=True,
    )
    balance = holder.balance
    if balance.free_credits:  # say where a total above --credits comes from
        typer.secho(
            f"{info.account_id} has {credits_text(balance.prepaid)}: {credits_text(balance.credits)} granted (they "
            f"never lapse) + this month's {credits_text(balance.free_credits)} of plan {balance.plan} (every plan "
            "gets its monthly credits each month; unused ones lapse at the month's end).",
            err=True,
        )


@keys_app.command("list")
def keys_list(
    account: Annotated[
        Optional[str], typer.Option("--account", metavar="ACCOUNT_ID", help="Only this account's keys.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """List API keys (never their secrets)."""
    from .offline import with_keys

    async def run():  # type: ignore[no-untyped-def]
        async with with_keys(Settings()) as keys:
            return await keys.list(account)

    found = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps([
            {
                "id": k.id, "key": k.display, "name": k.name, "plan": k.plan, "revoked": k.revoked, "mode": k.mode,
                "account_id": k.account_id, "scopes": list(k.scopes), "created_at": k.created_at.isoformat(),
                "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
            }
            for k in found
        ], indent=2))
        return
    _print_table(
        ("ID", "KEY", "NAME", "PLAN", "STATE", "MODE", "LAST USED", "ACCOUNT", "SCOPES"),
        [
            (k.id, k.display, k.name, k.plan, "revoked" if k.revoked else "active", k.mode,
             k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "never", k.account_id,
             ",".join(k.scopes))
            for k in found
        ],
    )


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[
        str, typer.Argument(metavar="KEY_ID|KEY", help="The key's id (key_…, from `arclip keys list`) or the key itself.")
    ],
) -> None:
    """Revoke an API key at once."""
    from .offline import with_keys

    async def run():  # type: ignore[no-untyped-def]
        async with with_keys(Settings()) as keys:
            return await keys.revoke(key)

    info = asyncio.run(run())
    typer.echo(f"revoked {info.id} ({info.name})")


@accounts_app.command("list")
def accounts_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """List accounts: plan, credits left, Stripe customer."""
    from billing.plans import credits_value, format_credits

    from .offline import with_accounts

    async def run():  # type: ignore[no-untyped-def]
        async with with_accounts(Settings()) as (_, accounts):
            return await accounts.list()

    found = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps([
            {
                "id": a.id, "name": a.name, "plan": a.plan, "credits_remaining": credits_value(a.balance.remaining),
                "suspended": a.suspended, "stripe_customer_id": a.stripe_customer_id,
                "created_at": a.created_at.isoformat(),
            }
            for a in found
        ], indent=2))
        return
    _print_table(
        ("ID", "NAME", "PLAN", "CREDITS LEFT", "STATE", "STRIPE CUSTOMER"),
        [
            (a.id, a.name, a.plan, format_credits(a.balance.remaining), "suspended" if a.suspended else "active",
             a.stripe_customer_id or "-")
            for a in found
        ],
    )


@accounts_app.command("credit")
def accounts_credit(
    account: Annotated[
        str, typer.Argument(metavar="ACCOUNT_ID", help="The account's id (from `arclip accounts list`).")
    ],
    credits: Annotated[str, typer.Argument(metavar="N", help="Credits to add (never lapse).")],
) -> None:
    """Grant credits to an account (recorded in its ledger)."""
    from billing import to_milli
    from billing.plans import credits_text

    from .offline import with_accounts

    async def run():  # type: ignore[no-untyped-def]
        async with with_accounts(Settings()) as (_, accounts):
            return await accounts.grant(account, to_milli(credits))

    info = asyncio.run(run())
    typer.echo(f"{info.id}: {credits_text(info.balance.remaining)} left")


def _on_database(step):  # type: ignore[no-untyped-def]
    """Run ``step(engine)`` on the configured database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from .offline import with_database

    settings = Settings()

    async def run():  # type: ignore[no-untyped-def]
        async with with_database(settings) as engine:
            return await step(engine)

    # A refused schema (SchemaError) is one line through _user_error; a database that
    # cannot be used is named here, since the operator is pointing these commands at it.
    try:
        return asyncio.run(run())
    except (SQLAlchemyError, OSError, ImportError) as exc:
        where = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
        failure = f"cannot use the database {where}: {_reason(exc)}"
    _fail(failure, 1)  # outside the except: the exit carries no database error for others to report again


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option("--revision", help="Upgrade to this revision instead of the latest.")] = "head",
) -> None:
    """Upgrade the schema (a database made before migrations is adopted first); replicas wait for it."""
    from . import migrations

    state = _on_database(lambda engine: migrations.upgrade(engine, revision))
    typer.echo(f"database at revision {state.current or 'base'} (this arclip expects {state.head})")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="The revision to go back to; `base` drops every table.")],
) -> None:
    """Downgrade the schema to an older revision, undoing the migrations after it (data they added is lost)."""
    from . import migrations

    state = _on_database(lambda engine: migrations.downgrade(engine, revision))
    typer.echo(f"database at revision {state.current or 'base'} (this arclip expects {state.head})")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and this arclip's; exit 1 unless they are the same."""
    from . import migrations

    state = _on_database(migrations.state)
    typer.echo(f"current: {state.describe()}")
    typer.echo(f"head: revision {state.head}")
    if state.up_to_date:
        typer.echo("up to date")
        return
    if state.too_new:
        typer.echo("newer than this arclip: run the release that upgraded it")
    else:
        typer.echo("out of date: run `arclip db upgrade`")
    raise typer.Exit(1)


model_app = typer.Typer(help="Serve the model elsewhere: NVIDIA Triton.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(model_app, name="model")


@model_app.command("export")
def model_export(
    directory: Annotated[Path, typer.Argument(help="The Triton model repository to write into (made if missing).")],
    model: Annotated[Optional[str], typer.Option("--model", help="Registry name or [preset:]path to an .onnx file; default ARCLIP_MODEL.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="The model's name on the server; default ARCLIP_INFERENCE_MODEL's name.")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="max_batch_size: images one execution takes.")] = 8,
    queue_delay_us: Annotated[int, typer.Option("--queue-delay-us", min=0, help="How long Triton waits to fill a batch (microseconds).")] = 2000,
    instances: Annotated[int, typer.Option("--instances", min=1, help="Model instances per GPU (or on the CPU).")] = 1,
    cpu: Annotated[bool, typer.Option("--cpu", help="A CPU instance group instead of a GPU one.")] = False,
    tensorrt: Annotated[bool, typer.Option("--tensorrt", help="TensorRT in FP16, its shape profile covering the engine's views.")] = False,
    backend: Annotated[str, typer.Option("--backend", help="onnxruntime, or python (onnxruntime inside Triton's Python backend).")] = "onnxruntime",
) -> None:
    """Write a Triton model repository: NAME/config.pbtxt and NAME/1/model.onnx (mount DIR as --model-repository)."""
    from segmentation import resolve_model
    from segmentation.remote import parse_model_ref
    from segmentation.triton_repo import ExportOptions, export_repository

    if backend not in ("onnxruntime", "python"):
        _fail(f"--backend {backend!r}: use onnxruntime or python")
    settings = Settings()
    spec = resolve_model(model or settings.model)
    options = ExportOptions(
        name=parse_model_ref(name or settings.inference_model)[0], max_batch=max_batch,
        max_queue_delay_us=queue_delay_us, instances=instances, gpu=not cpu, tensorrt=tensorrt,
        backend=backend,  # type: ignore[arg-type]
    )
    exported = export_repository(spec, directory, options)
    typer.echo(
        f"wrote {exported.config} and {exported.graph} ({spec.name}, {spec.preset.family} preset, "
        f"max batch {exported.max_batch}, {'any size' if exported.any_size else 'square inputs only'})"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
