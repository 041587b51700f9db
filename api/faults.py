"""Infrastructure faults: the one place that decides which errors mean "a backing service failed".

A database that is locked, unreachable or full, a Redis that is down, storage
that is down or full, an inference server or work queue that cannot take more:
none of these is the caller's fault nor a bug of ours, so each becomes a
``503`` with a stable ``code`` and ``Retry-After`` on HTTP, and close code 1013
("try again later") on websockets. ``classify_fault`` is the rule;
``api.errors`` answers with it and ``api.middleware.FaultMiddleware`` applies it
to whatever escapes a route, so no route maps faults by itself.

Our own packages already translate their vendors' errors at the adapter
(``StorageUnavailable``, ``HubUnavailable`` …); the rest (SQLAlchemy sessions
are used directly by the services, Redis clients in a few places) are
recognised here by their vendor types.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

from billing import errors as billing_errors
from segmentation import errors as seg_errors
from sync.assets import errors as asset_errors
from sync.hub import errors as hub_errors
from sync.pairing import errors as pairing_errors
from sync.storage import errors as storage_errors

from .warmup import EngineFailed, EngineStarting

log = logging.getLogger("arclip.faults")

# RFC 6455 (IANA registry): 1013 "Try Again Later": reconnect after a while.
WS_TRY_AGAIN_LATER = 1013
WS_INTERNAL_ERROR = 1011

# errno values that mean "no room to write", wherever the write was.
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# errno values that mean "the other end is not there (now)".
_UNREACHABLE = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ETIMEDOUT, errno.EPIPE, errno.ENOTCONN,
}


@dataclass(frozen=True)
class Fault:
    """A failure of something outside this process: answered 503, never charged."""

    code: str
    detail: str
    retry_after: int


def classify_fault(exc: BaseException) -> Fault | None:
    """The fault ``exc`` stands for, or None when it is not an infrastructure fault.

    Looks through the ``__cause__`` (else ``__context__``) chain, so a vendor error
    wrapped by one of our own (or by SQLAlchemy) is still recognised.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        fault = _classify_one(current)
        if fault is not None:
            return fault
        current = current.__cause__ or current.__context__
    return None


def _classify_one(exc: BaseException) -> Fault | None:
    # Our own exception tree first: the adapters have already said what failed.
    # Those that know their own wait.
    waits = (EngineStarting, seg_errors.InferenceUnavailable, seg_errors.Overloaded, asset_errors.LocatorBusy)
    if isinstance(exc, waits):
        return Fault(exc.code, exc.detail, max(1, int(exc.retry_after)))
    if isinstance(exc, EngineFailed):
        return Fault(exc.code, exc.detail, 30)
    if isinstance(exc, storage_errors.StorageFull):
        return Fault(exc.code, "Storage is full; retry later.", 30)
    if isinstance(exc, storage_errors.StorageUnavailable):
        return Fault(exc.code, "Storage is unavailable right now; retry shortly.", 5)
    if isinstance(exc, hub_errors.HubUnavailable):
        return Fault(exc.code, "Live sync is unavailable right now; retry shortly.", 2)
    if isinstance(exc, pairing_errors.PairingUnavailable):
        return Fault(exc.code, "Pairing is unavailable right now; retry shortly.", 5)
    if isinstance(exc, billing_errors.PaymentsNotConfigured):
        # Not transient, but a 503 like any missing backing service: an operator must configure Stripe.
        return Fault(exc.code, exc.detail, 3600)
    if isinstance(exc, billing_errors.PaymentsUnavailable):
        return Fault(exc.code, "Payments are unavailable right now; retry shortly.", 10)
    if isinstance(exc, billing_errors.LimiterUnavailable):
        return Fault(exc.code, "Rate limiting is unavailable right now; retry shortly.", 2)
    return _classify_vendor(exc)


def _classify_vendor(exc: BaseException) -> Fault | None:
    database = _database_fault(exc)
    if database is not None:
        return database
    redis = _redis_fault(exc)
    if redis is not None:
        return redis
    if isinstance(exc, OSError):
        if exc.errno in _FULL:
            return Fault("storage_full", "The server's disk is full; retry later.", 30)
        if exc.errno in _UNREACHABLE or isinstance(exc, (ConnectionError, TimeoutError)):
            # Some drivers let a refused connection through raw (asyncpg's connect): name the
            # service by the code it was raised in.
            return _UNREACHABLE_BY_ORIGIN.get(
                _origin(exc), Fault("service_unavailable", "A backing service cannot be reached; retry shortly.", 5)
            )
    return None


_UNREACHABLE_BY_ORIGIN = {
    "database": Fault("database_unavailable", "The database cannot be reached; retry shortly.", 5),
    "redis": Fault("redis_unavailable", "Redis is unavailable right now; retry shortly.", 2),
    "storage": Fault("storage_unavailable", "Storage is unavailable right now; retry shortly.", 5),
}
_ORIGINS = {
    "sqlalchemy": "database", "asyncpg": "database", "aiosqlite": "database", "psycopg": "database",
    "redis": "redis", "botocore": "storage", "boto3": "storage",
}


def _origin(exc: BaseException) -> str | None:
    """Which client library the error was raised in: the innermost frame of one that we know."""
    origin = None
    traceback = exc.__traceback__
    while traceback is not None:
        module = str(traceback.tb_frame.f_globals.get("__name__", "")).partition(".")[0]
        origin = _ORIGINS.get(module, origin)
        traceback = traceback.tb_next
    return origin


def _database_fault(exc: BaseException) -> Fault | None:
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.TimeoutError):  # the connection pool is exhausted
        return Fault("database_unavailable", "The database is busy; retry shortly.", 2)
    if isinstance(exc, sa_exc.DisconnectionError):
        return Fault("database_unavailable", "The database cannot be reached; retry shortly.", 5)
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    # IntegrityError, ProgrammingError, DataError … are bugs or races of ours, not faults.
    if not (isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) or exc.connection_invalidated):
        return None
    message = str(exc.orig or exc).lower()
    if "locked" in message or "busy" in message:
        return Fault("database_unavailable", "The database is busy; retry shortly.", 2)
    if "full" in message or "no space" in message or "quota" in message:
        return Fault("database_unavailable", "The database has no room to write; retry later.", 30)
    return Fault("database_unavailable", "The database cannot be reached; retry shortly.", 5)


def _redis_fault(exc: BaseException) -> Fault | None:
    try:
        from redis import exceptions as redis_errors
    except ImportError:  # pragma: no cover - redis is a dependency, but only used when configured
        return None
    transient = (
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        redis_errors.BusyLoadingError,
        redis_errors.ReadOnlyError,
        redis_errors.TryAgainError,
    )
    if isinstance(exc, transient) or (
        isinstance(exc, redis_errors.ResponseError) and str(exc).startswith(("OOM", "MISCONF", "LOADING"))
    ):
        return Fault("redis_unavailable", "Redis is unavailable right now; retry shortly.", 2)
    return None


def describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text[:200]}"
