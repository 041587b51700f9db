"""The live hub: a durable per-pairing message log, and the websocket sessions that tail it."""

from .base import Hub, Message, Wakeups
from .errors import HistoryTrimmed, HubError, HubUnavailable
from .gateway import SyncGateway
from .redis_streams import RedisHub
from .session import (
    CloseCode,
    SessionConfig,
    SessionState,
    Socket,
    SocketClosed,
    SyncSession,
)
from .sql import SqlHub

__all__ = [
    "CloseCode", "HistoryTrimmed", "Hub", "HubError", "HubUnavailable", "Message", "RedisHub", "SessionConfig",
    "SessionState", "Socket", "SocketClosed", "SqlHub", "SyncGateway", "SyncSession", "Wakeups",
]
