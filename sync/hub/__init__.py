"""The live hub: a durable per-pairing message log, and the websocket sessions that tail it."""

from .base import Hub, Message, Wakeups
from .errors import HistoryTrimmed, HubError, HubUnavailable
from .gateway import SyncGateway
from .presence import PEER_OFFLINE, PEER_ONLINE, MemoryPresence, Peer, Presence
from .presence_redis import RedisPresence
from .redis_streams import RedisHub
from .session import (
    MAX_ID,
    CloseCode,
    Fault,
    Faults,
    SessionConfig,
    SessionState,
    Socket,
    SocketClosed,
    SyncSession,
)
from .sql import SqlHub

__all__ = [
    "MAX_ID", "PEER_OFFLINE", "PEER_ONLINE", "CloseCode", "Fault", "Faults", "HistoryTrimmed", "Hub", "HubError",
    "HubUnavailable",
    "MemoryPresence", "Message", "Peer", "Presence", "RedisHub", "RedisPresence", "SessionConfig", "SessionState",
    "Socket", "SocketClosed", "SqlHub", "SyncGateway", "SyncSession", "Wakeups",
]
