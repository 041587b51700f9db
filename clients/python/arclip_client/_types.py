"""Typed results. Every result keeps what the server sent (``raw``/``headers``), so a field
the SDK does not know yet is never lost; fields the server may not send are ``None``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


# ---------------------------------------------------------------------------------------------------
# Small parsers (defensive: a bad value is None, never an exception)
# ---------------------------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            number = _float(value)
            return int(number) if number is not None and number.is_integer() else None
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return float(number) if number.is_finite() else None
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# ---------------------------------------------------------------------------------------------------
# Shared
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: the foreground (the clipped object) within an image."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def as_tuple(self) -> tuple[int, int, int, int]:
        """(left, top, width, height)."""
        return (self.left, self.top, self.width, self.height)

    @classmethod
    def from_json(cls, value: Any) -> Box | None:
        data = _mapping(value)
        parts = [_int(data.get(name)) for name in ("left", "top", "width", "height")]
        if any(part is None for part in parts):
            return None
        return cls(*parts)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RateLimit:
    """The key's rate limit, from the IETF ``RateLimit``/``RateLimit-Policy`` headers (or the older
    ``RateLimit-*``/``X-RateLimit-*`` ones): ``limit`` requests per ``window`` seconds, ``remaining``
    of them now, the quota resetting in ``reset`` seconds."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    window: float | None = None
    policy: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit | None:
        """None when the response carries no rate-limit header."""
        lower = {k.lower(): v for k, v in headers.items()}
        limit = remaining = None
        reset = window = None
        policy: str | None = None

        # draft-ietf-httpapi-ratelimit-headers (08+): RateLimit: "name";r=5;t=30 / RateLimit-Policy: "name";q=10;w=60
        # and the older dictionary form RateLimit: limit=10, remaining=5, reset=30
        items = _sf_list(lower.get("ratelimit", ""))
        policies = _sf_list(lower.get("ratelimit-policy", ""))
        flat = {k: v for name, params in items if name is None for k, v in params.items()}
        named = [(name, params) for name, params in items if name is not None]
        if named:
            policy, params = named[0]
            remaining = _int(params.get("r"))
            reset = _float(params.get("t"))
            match = next((p for n, p in policies if n == policy), None)
            if match is None and policies:
                match = policies[0][1]
            if match is not None:
                limit = _int(match.get("q"))
                window = _float(match.get("w"))
        elif flat:
            limit, remaining, reset = _int(flat.get("limit")), _int(flat.get("remaining")), _float(flat.get("reset"))
        if policies and limit is None:
            name, params = policies[0]
            policy = policy or name
            limit = _int(params.get("q"))
            window = _float(params.get("w"))
            if limit is None:  # old form: RateLimit-Policy: 10;w=60
                limit = _int(name)

        for prefix in ("ratelimit-", "x-ratelimit-"):
            limit = limit if limit is not None else _int(lower.get(prefix + "limit"))
            remaining = remaining if remaining is not None else _int(lower.get(prefix + "remaining"))
            reset = reset if reset is not None else _float(lower.get(prefix + "reset"))
        if limit is None and remaining is None and reset is None and window is None:
            return None
        return cls(limit=limit, remaining=remaining, reset=reset, window=window, policy=policy)


def _unquote(token: str) -> str:
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return token[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return token


_MEMBER = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+')
_PART = re.compile(r'(?:[^;"]|"(?:[^"\\]|\\.)*")+')


def _sf_list(value: str) -> list[tuple[str | None, dict[str, str]]]:
    """A lenient reading of a structured-field list: ``[(item or None, {param: value})]``.

    ``"name";q=10;w=60`` gives ``("name", {"q": "10", "w": "60"})``; a dictionary member
    ``limit=10`` gives ``(None, {"limit": "10"})``.
    """
    out: list[tuple[str | None, dict[str, str]]] = []
    for member in _MEMBER.findall(value or ""):
        parts = [p.strip() for p in _PART.findall(member) if p.strip()]
        if not parts:
            continue
        head, params = parts[0], {}
        for part in parts[1:]:
            key, _, val = part.partition("=")
            params[key.strip().lower()] = _unquote(val) if val else "true"
        if "=" in head and not head.startswith('"'):
            key, _, val = head.partition("=")
            params[key.strip().lower()] = _unquote(val)
            out.append((None, params))
        else:
            out.append((_unquote(head), params))
    return out


# ---------------------------------------------------------------------------------------------------
# Public API results
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipResult:
    """The cut-out: ``data`` is the image (PNG or WebP, RGBA or an alpha mask), and what its headers said."""

    data: bytes = field(repr=False)
    media_type: str
    width: int | None
    height: int | None
    foreground: Box | None
    credits_charged: float | None
    credits_remaining: float | None
    request_id: str | None
    rate_limit: RateLimit | None
    idempotent_replayed: bool = False  # the server replayed the first response to this Idempotency-Key
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_response(cls, content: bytes, headers: Mapping[str, str]) -> ClipResult:
        h = {k.lower(): v for k, v in headers.items()}
        parts = [_int(h.get(f"x-foreground-{n}")) for n in ("left", "top", "width", "height")]
        box = Box(*parts) if all(p is not None for p in parts) else None  # type: ignore[arg-type]
        return cls(
            data=content,
            media_type=(h.get("content-type") or "application/octet-stream").split(";")[0].strip(),
            width=_int(h.get("x-width")),
            height=_int(h.get("x-height")),
            foreground=box,
            credits_charged=_float(h.get("x-credits-charged")),
            credits_remaining=_float(h.get("x-credits-remaining")),
            request_id=h.get("x-request-id"),
            rate_limit=RateLimit.from_headers(h),
            idempotent_replayed=h.get("idempotent-replayed", "").strip().lower() == "true",
            headers=dict(h),
        )

    @property
    def size(self) -> tuple[int, int] | None:
        return (self.width, self.height) if self.width is not None and self.height is not None else None

    def __bytes__(self) -> bytes:
        return self.data

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the image to ``path``; returns it as a ``Path``."""
        target = Path(path)
        target.write_bytes(self.data)
        return target

    def to_image(self) -> PILImage:
        """The image as a Pillow ``Image`` (needs Pillow)."""
        import io

        from PIL import Image

        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image


@dataclass(frozen=True)
class Usage:
    """The account's usage in the current billing period."""

    period: str | None = None
    requests: int | None = None
    credits: float | None = None  # credits spent
    by_operation: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, value: Any) -> Usage:
        data = _mapping(value)
        return cls(
            period=_str(data.get("period")),
            requests=_int(data.get("requests")),
            credits=_float(data.get("credits", data.get("credits_used"))),
            by_operation=dict(_mapping(data.get("by_operation"))),
            raw=dict(data),
        )


def _remaining_credits(data: Mapping[str, Any]) -> float | None:
    """The spendable balance, wherever the server put it."""
    candidates: list[Any] = [data.get("credits_remaining"), data.get("remaining")]
    for name in ("balance", "credits"):
        value = data.get(name)
        if isinstance(value, Mapping):
            candidates += [value.get("remaining"), value.get("available"), value.get("balance")]
        else:
            candidates.append(value)
    return next((number for number in map(_float, candidates) if number is not None), None)


@dataclass(frozen=True)
class Account:
    """``GET /v1/account``: the key's plan, credits and usage.

    Read defensively: a field the server does not send is ``None`` (or empty), and everything it
    sent stays in ``raw`` (``account["keys"]`` reads it).
    """

    id: str | None
    name: str | None
    plan: str | None
    mode: str | None  # the key's: "live" or "test"
    credits_remaining: float | None
    usage: Usage
    suspended: bool | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    request_id: str | None = None
    rate_limit: RateLimit | None = None

    @classmethod
    def from_json(cls, body: Any, headers: Mapping[str, str] | None = None) -> Account:
        data = _mapping(body)
        nested = _mapping(data.get("account"))
        if nested:  # {"account": {...}, ...}
            data = {**data, **nested}
        plan_value = data.get("plan")
        plan = _str(plan_value) or _str(_mapping(plan_value).get("name")) or _str(_mapping(plan_value).get("id"))
        mode = _str(data.get("mode")) or _str(_mapping(data.get("key")).get("mode"))
        if mode is None and isinstance(data.get("livemode"), bool):
            mode = "live" if data["livemode"] else "test"
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        remaining = _remaining_credits(data)
        if remaining is None:
            remaining = _float(headers.get("x-credits-remaining"))
        suspended = data.get("suspended")
        return cls(
            id=_str(data.get("account_id")) or _str(data.get("id")),
            name=_str(data.get("name")),
            plan=plan,
            mode=mode,
            credits_remaining=remaining,
            usage=Usage.from_json(data.get("usage")),
            suspended=suspended if isinstance(suspended, bool) else None,
            raw=dict(_mapping(body)),
            request_id=headers.get("x-request-id"),
            rate_limit=RateLimit.from_headers(headers),
        )

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)


# ---------------------------------------------------------------------------------------------------
# Device API results
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairing:
    """A pairing opened by the desktop companion: show ``code`` (or ``qr_url`` as a QR code)."""

    pairing_id: str
    code: str
    qr_url: str
    expires_at: datetime | None
    desktop_token: str = field(repr=False)
    device_id: str | None = None
    max_phones: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> Pairing:
        data = _mapping(body)
        return cls(
            pairing_id=str(data["pairing_id"]),
            code=str(data["code"]),
            qr_url=str(data.get("qr_url", "")),
            expires_at=_datetime(data.get("expires_at")),
            desktop_token=str(data["desktop_token"]),
            device_id=_str(data.get("device_id")),
            max_phones=_int(data.get("max_phones")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class PairingCode:
    """A fresh code for a pairing (to add a phone, or replace a lapsed code)."""

    code: str
    qr_url: str
    expires_at: datetime | None

    @classmethod
    def from_json(cls, body: Any) -> PairingCode:
        data = _mapping(body)
        return cls(
            code=str(data["code"]), qr_url=str(data.get("qr_url", "")), expires_at=_datetime(data.get("expires_at"))
        )


@dataclass(frozen=True)
class DeviceInfo:
    device_id: str
    role: str


@dataclass(frozen=True)
class PairingInfo:
    pairing_id: str
    state: str
    created_at: datetime | None
    expires_at: datetime | None
    max_phones: int | None
    devices: tuple[DeviceInfo, ...]

    @classmethod
    def from_json(cls, body: Any) -> PairingInfo:
        data = _mapping(body)
        devices = tuple(
            DeviceInfo(str(d.get("device_id")), str(d.get("role")))
            for d in data.get("devices") or ()
            if isinstance(d, Mapping)
        )
        return cls(
            pairing_id=str(data.get("pairing_id")),
            state=str(data.get("state")),
            created_at=_datetime(data.get("created_at")),
            expires_at=_datetime(data.get("expires_at")),
            max_phones=_int(data.get("max_phones")),
            devices=devices,
        )


@dataclass(frozen=True)
class Asset:
    """A clipped capture: a PNG with alpha, ``bbox`` the object within it, ``url`` signed and expiring."""

    asset_id: str
    url: str | None
    width: int | None
    height: int | None
    bbox: Box | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.asset_id

    @classmethod
    def from_json(cls, body: Any) -> Asset:
        data = _mapping(body)
        return cls(
            asset_id=str(data["asset_id"]),
            url=_str(data.get("url")),
            width=_int(data.get("width")),
            height=_int(data.get("height")),
            bbox=Box.from_json(data.get("bbox")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Placement:
    """Where a paste landed: ``(x, y)`` in the companion's screen-picture pixels."""

    asset_id: str
    x: float
    y: float
    scale: float | None = None
    rotation_deg: float | None = None
    confidence: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> Placement:
        data = _mapping(body)
        return cls(
            asset_id=str(data["asset_id"]),
            x=float(data["x"]),
            y=float(data["y"]),
            scale=_float(data.get("scale")),
            rotation_deg=_float(data.get("rotation_deg")),
            confidence=_float(data.get("confidence")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class ScreenInfo:
    """The companion's latest screen picture as the server indexed it."""

    pairing_id: str | None
    version: str | None
    width: int | None
    height: int | None
    features: int | None
    markers: int | None
    locatable: bool | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> ScreenInfo:
        data = _mapping(body)
        locatable = data.get("locatable")
        return cls(
            pairing_id=_str(data.get("pairing_id")),
            version=_str(data.get("version")),
            width=_int(data.get("width")),
            height=_int(data.get("height")),
            features=_int(data.get("features")),
            markers=_int(data.get("markers")),
            locatable=locatable if isinstance(locatable, bool) else None,
            raw=dict(data),
        )


# Message types of the live channel (SPEC §6), for comparisons without typos.
ASSET_CREATED = "asset.created"
ASSET_PLACED = "asset.placed"
PASTE_FAILED = "paste.failed"
PEER_JOINED = "peer.joined"
PEER_LEFT = "peer.left"
PAIRING_CLOSED = "pairing.closed"
RESYNC = "resync"


@dataclass(frozen=True)
class Event:
    """One message of the pairing's log, from ``/v1/sync``: ``id`` increases by one per message."""

    id: int
    type: str
    data: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def asset(self) -> Asset | None:
        """The asset of an ``asset.created`` message (else None)."""
        return Asset.from_json(self.data) if self.type == ASSET_CREATED else None

    @property
    def placement(self) -> Placement | None:
        """The placement of an ``asset.placed`` message (else None)."""
        return Placement.from_json(self.data) if self.type == ASSET_PLACED else None

    @property
    def hint(self) -> str | None:
        """The user-facing hint of a ``paste.failed`` message."""
        return _str(self.data.get("hint"))
