"""The documentation is the repository's own: every link resolves inside it, nothing points to the
web, the settings table is generated from the settings, and every problem code is documented."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from api.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC_PAGES = ("api.md", "devices.md", "configuration.md", "deployment.md", "architecture.md")

# [text](target) and ![alt](target), reference definitions "[id]: target", and bare URLs.
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_URL = re.compile(r"\bhttps?://[^\s)>\]`'\"]+")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_LOOPBACK = {"localhost", "127.0.0.1", "[::1]", "::1"}


def markdown_files() -> list[Path]:
    """Every *.md the repository tracks, or would (untracked but not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    return sorted(ROOT / name for name in listed if name and (ROOT / name).is_file())


def _prose(text: str) -> str:
    """The text outside code blocks and code spans: links are read there."""
    return _CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def links(path: Path) -> list[str]:
    prose = _prose(path.read_text(encoding="utf-8"))
    return _INLINE.findall(prose) + _REFERENCE.findall(prose)


def test_the_docs_exist_and_the_readme_leads_to_them() -> None:
    for page in DOC_PAGES:
        assert (DOCS / page).is_file(), page
    readme = links(ROOT / "README.md")
    for page in DOC_PAGES:
        assert f"docs/{page}" in readme, f"README.md does not link docs/{page}"


def test_markdown_files_are_found() -> None:
    found = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/api.md", "clients/python/README.md"} <= found


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_stays_in_the_repository(path: Path) -> None:
    problems: list[str] = []
    for target in links(path):
        parts = urlsplit(target)
        if parts.scheme in ("http", "https"):
            if parts.hostname not in _LOOPBACK:
                problems.append(f"{target}: links outside the repository")
            continue
        if parts.scheme or target.startswith("//"):
            problems.append(f"{target}: not a relative link")
            continue
        if not parts.path:  # "#anchor" within the page
            file = path
        else:
            # "/deploy/x": from the repository's root (as the code host renders it); else from the page.
            base = ROOT if parts.path.startswith("/") else path.parent
            file = (base / unquote(parts.path).lstrip("/")).resolve()
            if not file.is_relative_to(ROOT):
                problems.append(f"{target}: leaves the repository")
                continue
            if not file.exists():
                problems.append(f"{target}: no such file")
                continue
        if parts.fragment and file.suffix == ".md" and parts.fragment not in anchors(file):
            problems.append(f"{target}: no heading #{parts.fragment} in {file.relative_to(ROOT)}")
    assert not problems, problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_absolute_web_address_outside_loopback(path: Path) -> None:
    """Not even as text: the docs must not send a reader (or a machine without network) elsewhere.

    Example addresses in code (``https://192.168.1.20:8000``, ``s3://…``) are fine; prose may name
    only loopback ones.
    """
    outside = [u for u in _URL.findall(_prose(path.read_text(encoding="utf-8")))
               if urlsplit(u).hostname not in _LOOPBACK]
    assert not outside, outside


def _settings_table():
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_is_in_the_configuration_table() -> None:
    table = _settings_table()
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    block = table.current(text)
    assert block is not None, "docs/configuration.md lost its generated settings table"
    documented = set(re.findall(r"^\| `(ARCLIP_[A-Z0-9_]+)` \|", block, re.MULTILINE))
    fields = {table.env_name(name) for name in Settings.model_fields}
    assert fields - documented == set(), "missing from docs/configuration.md: run python scripts/settings_table.py"
    assert documented - fields == set(), "documented but not settings: run python scripts/settings_table.py"
    assert block == table.render(), "docs/configuration.md is out of date: run python scripts/settings_table.py"


def test_every_documented_problem_code_is_in_the_api_reference() -> None:
    from api.app import create_app
    from tests.conftest import disk_model

    document = create_app(Settings(data_dir=ROOT / ".never-created"), model=disk_model()).openapi()
    codes = set()
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    codes.update(re.findall(r"`([a-z][a-z0-9_]*)`", response.get("description", "")))
    assert codes, "the OpenAPI document lists no problem codes"
    reference = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = sorted(code for code in codes if f"`{code}`" not in reference)
    assert not missing, f"docs/api.md does not list: {missing}"
