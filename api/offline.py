"""What the CLI runs without a server: offline clipping, locating, key admin."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import IO, Any

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import AccountService, ApiKeyService
from segmentation import ClipOptions, InputError

from .app import build_engine, build_model
from .database import create_database, create_schema, session_factory
from .metering import catalogue
from .settings import Settings


@contextlib.asynccontextmanager
async def with_database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The configured database's engine, schema untouched (the ``db`` commands manage it)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = create_database(settings.resolved_database_url, busy_timeout_s=settings.database_busy_timeout_s)
    try:
        yield database
    finally:
        await database.dispose()


@contextlib.asynccontextmanager
async def with_keys(settings: Settings) -> AsyncIterator[ApiKeyService]:
    async with with_database(settings) as database:
        await create_schema(database, auto_migrate=settings.auto_migrate)
        yield ApiKeyService(session_factory(database), catalogue(settings))


@contextlib.asynccontextmanager
async def with_accounts(settings: Settings) -> AsyncIterator[tuple[ApiKeyService, AccountService]]:
    async with with_database(settings) as database:
        await create_schema(database, auto_migrate=settings.auto_migrate)
        sessions = session_factory(database)
        plans = catalogue(settings)
        yield ApiKeyService(sessions, plans), AccountService(sessions, plans)


class CommandError(Exception):
    """What the command line asked cannot be done as asked (the CLI exits 2 with ``detail``)."""

    def __init__(self, detail: str, code: str = "invalid_usage") -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


# What a folder given to ``arclip clip`` is searched for (by suffix, case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif")
OUTPUT_SUFFIXES = {".png": "png", ".webp": "webp"}
# Image formats we cannot write: a cut-out's transparency needs PNG or WebP.
_REFUSED_SUFFIXES = (".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif")


def _expand_inputs(inputs: list[Path], recursive: bool) -> list[tuple[Path, Path]]:
    """Each image to clip with its output name (relative, no suffix): files as given, folders searched."""
    found: list[tuple[Path, Path]] = []
    for given in inputs:
        if given.is_file():
            found.append((given, Path(given.stem)))
            continue
        if not given.is_dir():
            raise CommandError(f"{given}: no such file or folder")
        candidates = given.rglob("*") if recursive else given.iterdir()
        images = sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            hint = "; add -r to look in its subfolders" if not recursive and any(p.is_dir() for p in given.iterdir()) else ""
            raise CommandError(f"{given}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder{hint}")
        found.extend((p, p.relative_to(given).with_suffix("")) for p in images)
    return found


def output_format(output: Path, requested: str | None) -> str:
    """The format a single output file is written in: its suffix's, which ``--format`` must agree with."""
    suffix = output.suffix.lower()
    if suffix in _REFUSED_SUFFIXES:
        raise CommandError(
            f"{output}: a cut-out needs transparency, which {'JPEG' if suffix == '.jpg' else suffix[1:].upper()} "
            "cannot hold; "
            "name the output .png or .webp (--bg-color fills the background in either)"
        )
    implied = OUTPUT_SUFFIXES.get(suffix)
    if implied is None:  # no suffix, or one that names no image format: --format decides
        return requested or "png"
    if requested is not None and requested != implied:
        raise CommandError(f"--format {requested} does not match {output.name}; name it .{requested} or drop --format")
    return implied


def plan_clips(
    inputs: list[Path], output: Path, requested_format: str | None, *, recursive: bool = False
) -> tuple[list[Path], list[Path], str]:
    """Sources, their targets and the output format. One input file: OUT is a file; otherwise a folder."""
    sources = _expand_inputs(inputs, recursive)
    if len(inputs) == 1 and inputs[0].is_file() and not output.is_dir():
        fmt = output_format(output, requested_format)
        output.parent.mkdir(parents=True, exist_ok=True)
        return [sources[0][0]], [output], fmt
    if output.exists() and not output.is_dir():
        raise CommandError(f"{output} is a file; several inputs (or a folder) need an output folder")
    if output.suffix.lower() in (*OUTPUT_SUFFIXES, *_REFUSED_SUFFIXES):
        raise CommandError(f"{output} names a file; several inputs (or a folder) need an output folder")
    fmt = requested_format or "png"
    targets = [output / name.with_name(f"{name.name}.{fmt}") for _, name in sources]
    if len(set(targets)) != len(targets):
        twice = next(t for t in targets if targets.count(t) > 1)
        raise CommandError(f"two inputs would both be written to {twice}; give them different names")
    output.mkdir(parents=True, exist_ok=True)
    return [s for s, _ in sources], targets, fmt


async def clip_files(
    settings: Settings,
    inputs: list[Path],
    output: Path,
    *,
    model: str | None,
    options: dict[str, Any],
    recursive: bool = False,
) -> int:
    """Clip every input (files, or folders of images) into output; return how many failed.

    Each failure is reported and the rest go on. ``options["format"]`` None: from OUT's suffix.
    """
    import asyncio

    from tqdm import tqdm

    options = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in options.items()}
    ClipOptions.parse(**{**options, "format": options.get("format") or "png"})  # bad values first
    inputs, targets, fmt = plan_clips(inputs, output, options.get("format"), recursive=recursive)
    parsed = ClipOptions.parse(**{**options, "format": fmt})
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
                except (PermissionError, IsADirectoryError) as exc:
                    failures += 1
                    typer.secho(f"{source}: {exc.strerror}", fg=typer.colors.RED, err=True)
                    return
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(result.data)

        with tqdm(total=len(inputs), unit="img", disable=len(inputs) < 2) as bar:
            tasks = [asyncio.ensure_future(one(s, t)) for s, t in zip(inputs, targets)]
            for task in asyncio.as_completed(tasks):
                await task
                bar.update()
    finally:
        await engine.close()
    return failures


def locate_one(view: Path, screen: Path, cache: Any = None) -> dict[str, Any]:
    """The SPEC's locate object for one pair of image files (CommandError, InputError when refused)."""
    from sync.locate import locate_paths

    for path in (view, screen):
        if not path.is_file():
            raise CommandError(
                f"{path}: {'a folder, not an image file' if path.is_dir() else 'no such file'}", "file_not_found"
            )
    return locate_paths(view, screen, cache=cache).to_json()


def _pair(line: str) -> tuple[Path, Path]:
    try:
        pair = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CommandError(f"not JSON: {exc.msg} at column {exc.colno}", "invalid_json") from None
    if not isinstance(pair, dict) or not all(isinstance(pair.get(k), str) and pair[k] for k in ("view", "screen")):
        raise CommandError('a line is an object {"view": path, "screen": path}', "invalid_pair")
    return Path(pair["view"]), Path(pair["screen"])


def locate_pairs(lines: Iterable[str], out: IO[str]) -> int:
    """One JSON result line per input line, in order; a bad line gets an error object, the rest go on.

    Returns how many lines failed.
    """
    from sync.locate import IndexCache

    # Pairs often share a screen picture: index each one once.
    cache = IndexCache()
    failures = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            result = locate_one(*_pair(line), cache=cache)
        except (CommandError, InputError) as exc:
            failures += 1
            result = {
                "found": False, "x": None, "y": None, "confidence": 0.0, "line": number,
                "error": {"code": exc.code, "detail": exc.detail},
            }
        out.write(json.dumps(result) + "\n")
        out.flush()
    return failures
