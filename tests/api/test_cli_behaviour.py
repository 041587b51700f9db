"""The CLI a new user meets: one line and a documented exit code for every mistake, never a traceback."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import pytest
from PIL import Image

from tests.conftest import encode_image, jpeg, photo
from tests.sync.test_locate import camera_h, desktop, photograph, truth
from tests.test_cli import data_dir, run, shared_model, write  # noqa: F401 (fixtures)


def one_line_error(result, code: int) -> str:
    """The result failed with ``code`` and said so in exactly one ``error:`` line on stderr."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["clip"], ["keys", "create"], ["serve"], ["locate"]])
def test_help_shows_no_type_noise_and_the_exit_codes_are_documented(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "<str>" not in result.output
    if not command:
        text = " ".join(result.output.split())
        assert "Exit codes: 0 done; 1 the work failed" in text and "2 bad usage" in text


# --- locate ---------------------------------------------------------------------------------------


@pytest.fixture
def screen_and_view(tmp_path: Path) -> tuple[Path, Path, tuple[float, float]]:
    screen = desktop(3)
    H = camera_h(screen.shape[1], (640, 400), 35, 0, 0, 0)
    screen_path, view_path = tmp_path / "screen.png", tmp_path / "view.jpg"
    cv2.imwrite(str(screen_path), screen)
    cv2.imwrite(str(view_path), photograph(screen, H))
    return screen_path, view_path, truth(H)


def test_locate_missing_file_is_one_line(tmp_path: Path, data_dir: Path, screen_and_view) -> None:
    screen, _, _ = screen_and_view
    line = one_line_error(run("locate", "--view", str(tmp_path / "nope.jpg"), "--screen", str(screen)), 2)
    assert "nope.jpg" in line and "no such file" in line


def test_locate_text_file_is_one_line(tmp_path: Path, data_dir: Path, screen_and_view) -> None:
    screen, _, _ = screen_and_view
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n")
    result = run("locate", "--view", str(text), "--screen", str(screen))
    line = one_line_error(result, 1)
    assert "notes.txt" in line and "not an image" in line
    assert result.stdout == ""


def test_locate_one_pair_prints_one_object(data_dir: Path, screen_and_view) -> None:
    screen, view, (tx, ty) = screen_and_view
    result = run("locate", "--view", str(view), "--screen", str(screen))
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["found"] and math.hypot(found["x"] - tx, found["y"] - ty) < 4


def test_locate_pairs_answers_every_line_in_order(tmp_path: Path, data_dir: Path, screen_and_view) -> None:
    screen, view, (tx, ty) = screen_and_view
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    good = json.dumps({"view": str(view), "screen": str(screen)})
    lines = [
        good,
        "{not json",
        json.dumps({"view": str(view)}),
        json.dumps(["view", "screen"]),
        json.dumps({"view": str(tmp_path / "gone.jpg"), "screen": str(screen)}),
        json.dumps({"view": str(text), "screen": str(screen)}),
        "",
        good,
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(lines) + "\n")
    result = run("locate", "--pairs", str(pairs))
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == 7, result.stdout  # every non-empty line answered, in order
    assert out[0]["found"] and out[6]["found"] and out[0]["x"] == out[6]["x"]
    assert math.hypot(out[0]["x"] - tx, out[0]["y"] - ty) < 4 and "error" not in out[0]
    codes = [o["error"]["code"] for o in out[1:6]]
    assert codes == ["invalid_json", "invalid_pair", "invalid_pair", "file_not_found", "unreadable_image"]
    for bad, number in zip(out[1:6], [2, 3, 4, 5, 6]):
        assert bad["found"] is False and bad["x"] is None and bad["y"] is None and bad["confidence"] == 0.0
        assert bad["line"] == number and bad["error"]["detail"]
    assert "gone.jpg" in out[4]["error"]["detail"] and "notes.txt" in out[5]["error"]["detail"]
    line = one_line_error(result, 1)  # the batch finished, and its exit code says some lines failed
    assert "5 lines" in line


def test_locate_pairs_file_missing_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    line = one_line_error(run("locate", "--pairs", str(tmp_path / "none.jsonl")), 2)
    assert "none.jsonl" in line


# --- clip: folders and formats ---------------------------------------------------------------------


def test_clip_a_folder_and_recursively(tmp_path: Path, data_dir: Path, shared_model) -> None:
    shots = tmp_path / "shots"
    (shots / "day2").mkdir(parents=True)
    write(shots / "a.jpg", jpeg(160, 120))
    write(shots / "B.PNG", encode_image(photo(120, 160), "PNG"))
    write(shots / "readme.txt", b"not an image, not picked up")
    write(shots / "day2" / "a.jpg", jpeg(200, 100, seed=3))  # same stem, another folder: kept apart

    flat = run("clip", str(shots), "-o", str(tmp_path / "flat"))
    assert flat.exit_code == 0, flat.output
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["B.png", "a.png"]

    deep = run("clip", str(shots), "-r", "-o", str(tmp_path / "deep"), "--format", "webp")
    assert deep.exit_code == 0, deep.output
    made = sorted(str(p.relative_to(tmp_path / "deep")) for p in (tmp_path / "deep").rglob("*.webp"))
    assert made == ["B.webp", "a.webp", "day2/a.webp"]
    assert Image.open(tmp_path / "deep" / "day2" / "a.webp").size == (200, 100)


def test_clip_a_folder_without_images_says_so(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    line = one_line_error(run("clip", str(tmp_path / "empty"), "-o", str(tmp_path / "out")), 2)
    assert "no images" in line and "-r" in line


def test_clip_missing_input_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    line = one_line_error(run("clip", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o.png")), 2)
    assert "nope.jpg" in line


def test_clip_format_follows_the_output_suffix(tmp_path: Path, data_dir: Path, shared_model) -> None:
    source = write(tmp_path / "x.jpg", jpeg(160, 120))
    result = run("clip", str(source), "-o", str(tmp_path / "out" / "x.webp"))
    assert result.exit_code == 0, result.output
    img = Image.open(tmp_path / "out" / "x.webp")
    assert img.format == "WEBP" and img.mode == "RGBA"


@pytest.mark.parametrize("name", ["x.jpg", "x.JPEG"])
def test_clip_to_a_jpeg_name_is_refused(tmp_path: Path, data_dir: Path, name: str) -> None:
    source = write(tmp_path / "in.jpg", jpeg(64, 48))
    line = one_line_error(run("clip", str(source), "-o", str(tmp_path / name), "--bg-color", "#fff"), 2)
    assert "transparency" in line and ".png or .webp" in line
    assert not (tmp_path / name).exists()


def test_clip_format_that_contradicts_the_suffix_is_refused(tmp_path: Path, data_dir: Path) -> None:
    source = write(tmp_path / "in.jpg", jpeg(64, 48))
    line = one_line_error(run("clip", str(source), "-o", str(tmp_path / "x.png"), "--format", "webp"), 2)
    assert "--format webp" in line and "x.png" in line


def test_clip_several_failures_end_with_a_count(tmp_path: Path, data_dir: Path, shared_model) -> None:
    good = write(tmp_path / "good.jpg", jpeg(64, 48))
    bad = write(tmp_path / "bad.jpg", b"text\n")
    result = run("clip", str(good), str(bad), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "bad.jpg" in result.stderr and "1 image could not be clipped" in result.stderr
    assert "Traceback" not in result.output


# --- keys and accounts ------------------------------------------------------------------------------


def test_keys_revoke_takes_the_key_itself(data_dir: Path) -> None:
    secret = run("keys", "create", "--name", "leaked").stdout.strip()
    result = run("keys", "revoke", secret)
    assert result.exit_code == 0, result.output
    listed = json.loads(run("keys", "list", "--json").stdout)
    assert [(k["name"], k["revoked"]) for k in listed] == [("leaked", True)]
    assert listed[0]["id"] in result.stdout
    assert secret not in run("keys", "list").stdout


def test_keys_revoke_a_mistyped_key_is_one_line(data_dir: Path) -> None:
    secret = run("keys", "create", "--name", "k").stdout.strip()
    line = one_line_error(run("keys", "revoke", secret[:-1] + ("A" if secret[-1] != "A" else "B")), 2)
    assert "not a well-formed API key" in line


def test_lists_have_a_header_and_json(data_dir: Path) -> None:
    run("keys", "create", "--name", "my app", "--plan", "payg")
    keys = run("keys", "list").stdout.splitlines()
    assert keys[0].split() == ["ID", "KEY", "NAME", "PLAN", "STATE", "MODE", "LAST", "USED", "ACCOUNT", "SCOPES"]
    assert len(keys) == 2 and keys[1].startswith("key_")
    accounts = run("accounts", "list").stdout.splitlines()
    assert accounts[0].split()[:3] == ["ID", "NAME", "PLAN"] and "CREDITS LEFT" in accounts[0]
    (account,) = json.loads(run("accounts", "list", "--json").stdout)
    assert account["name"] == "my app" and account["plan"] == "payg" and account["suspended"] is False
    (key,) = json.loads(run("keys", "list", "--json").stdout)
    assert key["account_id"] == account["id"] and key["last_used_at"] is None and key["key"].startswith("arc_live_")


def test_empty_lists_still_have_their_header(data_dir: Path) -> None:
    assert run("keys", "list").stdout.split()[0] == "ID"
    assert json.loads(run("accounts", "list", "--json").stdout) == []


def test_keys_create_explains_the_monthly_credits(data_dir: Path) -> None:
    result = run("keys", "create", "--name", "shop", "--plan", "prepaid", "--credits", "200")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "250 credits: 200 credits granted" in text and "this month's 50 credits of plan prepaid" in text
    assert "every plan gets its monthly credits" in text


def test_one_credit_is_singular(data_dir: Path) -> None:
    from billing.plans import credits_text

    assert credits_text(1000) == "1 credit" and credits_text(250) == "0.25 credits" and credits_text(0) == "0 credits"
    account = json.loads(run("accounts", "list", "--json").stdout or "[]")
    assert account == []
    run("keys", "create", "--name", "p", "--plan", "payg")
    (acct,) = json.loads(run("accounts", "list", "--json").stdout)
    result = run("accounts", "credit", acct["id"], "1")
    assert result.exit_code == 0 and "credits left" in result.stdout  # payg: balance plus headroom


def test_unknown_plan_and_bad_amount_are_one_line(data_dir: Path) -> None:
    line = one_line_error(run("keys", "create", "--name", "x", "--plan", "gold"), 2)
    assert "gold" in line and "free" in line
    line = one_line_error(run("keys", "create", "--name", "x", "--credits", "lots"), 2)
    assert "lots" in line


def test_unknown_account_is_one_line(data_dir: Path) -> None:
    line = one_line_error(run("accounts", "credit", "acct_nope", "5"), 2)
    assert "acct_nope" in line


def test_a_bad_setting_is_one_line(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCLIP_PORT", "eighty")
    line = one_line_error(run("keys", "list"), 2)
    assert "ARCLIP_PORT" in line


def test_a_database_that_cannot_be_opened_is_one_line(tmp_path: Path, data_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ARCLIP_DATABASE_URL", f"sqlite+aiosqlite:///{blocker}/under/a/file.db")
    line = one_line_error(run("keys", "list"), 1)
    assert "database" in line.lower()


# --- wording ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds,text",
    [(86400, "1 day"), (7 * 86400, "7 days"), (36 * 3600, "36 hours"), (900, "15 minutes"), (90, "90 seconds"),
     (1, "1 second")],
)
def test_durations_are_said_as_people_say_them(seconds: int, text: str) -> None:
    from api.assets import describe_duration

    assert describe_duration(seconds) == text
