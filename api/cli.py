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
    name: Annotated[str, typer.Option("--name", help="What the key is for.")],
    plan: Annotated[str, typer.Option("--plan", help="Billing plan.")] = "free",
    credits: Annotated[Optional[float], typer.Option("--credits", help="Starting credits.")] = None,
) -> None:
    """Create an API key and print it (the only time it is shown)."""
    from .offline import with_keys

    async def run():  # type: ignore[no-untyped-def]
        async with with_keys(Settings()) as keys:
            return await keys.create(name, plan=plan)

    info, secret = asyncio.run(run())
    typer.echo(secret)
    typer.secho(f"{info.id} ({info.name}, plan {info.plan}): store the key now; it cannot be shown again.", err=True)
    if credits is not None:
        typer.secho("note: credits arrive with billing; this key is unmetered for now.", err=True)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never their secrets)."""
    from .offline import with_keys

    async def run():  # type: ignore[no-untyped-def]
        async with with_keys(Settings()) as keys:
            return await keys.list()

    for info in asyncio.run(run()):
        state = "revoked" if info.revoked else "active"
        used = info.last_used_at.isoformat() if info.last_used_at else "never"
        typer.echo(f"{info.id}\t{info.display}\t{info.name}\t{info.plan}\t{state}\tlast used {used}")


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
