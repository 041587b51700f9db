"""What the CLI runs without a server: offline clipping, locating, key admin."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import IO, Any

import typer

from billing import AccountService, ApiKeyService
from segmentation import ClipOptions, InputError

from .app import build_engine, build_model
from .database import create_database, create_schema, session_factory
from .metering import catalogue
from .settings import Settings


@contextlib.asynccontextmanager
async def with_keys(settings: Settings) -> AsyncIterator[ApiKeyService]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = create_database(settings.resolved_database_url)
    try:
        await create_schema(database)
        yield ApiKeyService(session_factory(database), catalogue(settings))
    finally:
        await database.dispose()


@contextlib.asynccontextmanager
async def with_accounts(settings: Settings) -> AsyncIterator[tuple[ApiKeyService, AccountService]]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = create_database(settings.resolved_database_url)
    try:
        await create_schema(database)
        sessions = session_factory(database)
        plans = catalogue(settings)
        yield ApiKeyService(sessions, plans), AccountService(sessions, plans)
    finally:
        await database.dispose()


def _output_paths(inputs: list[Path], output: Path, fmt: str) -> list[Path]:
    if len(inputs) == 1 and not output.is_dir():
        output.parent.mkdir(parents=True, exist_ok=True)
        return [output]
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output} is a file; several inputs need an output folder")
    output.mkdir(parents=True, exist_ok=True)
    paths = [output / f"{p.stem}.{fmt}" for p in inputs]
    if len(set(paths)) != len(paths):
        raise ValueError("two inputs share a file stem; their outputs would overwrite each other")
    return paths


async def clip_files(
    settings: Settings, inputs: list[Path], output: Path, *, model: str | None, options: dict[str, Any]
) -> int:
    """Clip every input into output; return how many failed (each is reported, the rest go on)."""
    import asyncio

    from tqdm import tqdm

    parsed = ClipOptions.parse(**{k: (str(v).lower() if isinstance(v, bool) else v) for k, v in options.items()})
    targets = _output_paths(inputs, output, parsed.format)
    if model:
        settings = settings.model_copy(update={"model": model})
    engine = build_engine(settings, build_model(settings))
    config = engine.config
    await engine.start()
    failures = 0
    try:
        gate = asyncio.Semaphore(config.concurrency)

        async def one(source: Path, target: Path) -> None:
            nonlocal failures
            async with gate:
                try:
                    result = await engine.clip(source.read_bytes(), parsed)
                except InputError as exc:
                    failures += 1
                    typer.secho(f"{source}: {exc.detail}", fg=typer.colors.RED, err=True)
                    return
                target.write_bytes(result.data)

        with tqdm(total=len(inputs), unit="img", disable=len(inputs) < 2) as bar:
            tasks = [asyncio.ensure_future(one(s, t)) for s, t in zip(inputs, targets)]
            for task in asyncio.as_completed(tasks):
                await task
                bar.update()
    finally:
        await engine.close()
    return failures


def locate_pairs(lines: Iterable[str], out: IO[str]) -> None:
    """One JSON result line per input line, in order."""
    from sync.locate import IndexCache, locate_paths

    # Pairs often share a screen picture: index each one once.
    cache = IndexCache()
    for line in lines:
        if not line.strip():
            continue
        pair = json.loads(line)
        location = locate_paths(Path(pair["view"]), Path(pair["screen"]), cache=cache)
        out.write(json.dumps(location.to_json()) + "\n")
        out.flush()
