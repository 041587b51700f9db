"""Part of the composition root: pairing and the live hub, built from settings.

They are built together because they share Redis (when ``ARCLIP_REDIS_URL`` is
set) and call each other: pairing publishes ``peer.*`` and ``pairing.closed``
through the hub, the hub forgets a closed pairing's log, and a resync snapshot
includes the pairing's devices. Presence (who is connected now) follows the hub:
in process without Redis, shared by the replicas with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sync.assets import Sweeper
from sync.hub import (
    Hub,
    MemoryPresence,
    Presence,
    RedisHub,
    RedisPresence,
    SessionConfig,
    SqlHub,
    SyncGateway,
)
from sync.pairing import (
    Limit,
    MemoryThrottle,
    PairingConfig,
    PairingService,
    RedisThrottle,
    Throttle,
)

from .faults import classify_fault
from .settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("arclip")


def pairing_config(settings: Settings) -> PairingConfig:
    return PairingConfig(
        code_length=settings.pairing_code_length,
        code_ttl=timedelta(seconds=settings.pairing_code_ttl_s),
        lifetime=timedelta(seconds=settings.pairing_lifetime_s),
        max_phones=settings.pairing_max_phones,
        claims_per_client=Limit(settings.pairing_claims_per_minute, 60.0),
        claim_failures=Limit(settings.pairing_failed_claims_per_minute, 60.0),
        opens_per_client=Limit(settings.pairing_opens_per_minute, 60.0),
    )


def session_config(settings: Settings) -> SessionConfig:
    return SessionConfig(heartbeat_s=settings.hub_heartbeat_s, idle_timeout_s=settings.hub_idle_timeout_s)


@dataclass
class LiveSync:
    pairings: PairingService
    hub: Hub
    live: SyncGateway
    sweeper: Sweeper
    redis: Redis | None = None

    async def close(self) -> None:
        """Sockets first (1012: reconnect elsewhere), then the sweeper, presence, the hub, and Redis."""
        await self.live.shutdown()
        await self.sweeper.close()
        await self.live.presence.close()
        await self.hub.close()
        if self.redis is not None:
            await self.redis.aclose()


async def start_live_sync(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> LiveSync:
    redis: Redis | None = None
    retention = timedelta(seconds=settings.hub_retention_s)
    hub: Hub
    throttle: Throttle
    presence: Presence
    grace_s = settings.hub_presence_grace_s
    if settings.redis_url:
        from redis.asyncio import Redis

        # A connection idle for 10 s is pinged before use, so one left stale by a Redis restart
        # is replaced instead of failing the first request after it.
        redis = Redis.from_url(settings.redis_url, health_check_interval=10)
        hub = RedisHub(redis, max_messages=settings.hub_max_messages, retention=retention)
        throttle = RedisThrottle(redis)
        presence = RedisPresence(redis, grace_s=grace_s)
        log.info("live hub on Redis streams")
    else:
        # SQLite has one writer at a time: the hub's transactions take turns rather than race (sync/hub/sql.py).
        one_at_a_time = sessions.kw["bind"].dialect.name == "sqlite"
        hub = SqlHub(
            sessions, max_messages=settings.hub_max_messages, retention=retention, one_at_a_time=one_at_a_time
        )
        throttle = MemoryThrottle()
        presence = MemoryPresence(grace_s)
        log.info("live hub in process (messages kept in the database)")
    pairings = PairingService(sessions, pairing_config(settings), throttle=throttle, events=hub.publish)
    pairings.add_close_listener(hub.forget)
    live = SyncGateway(hub, session_config(settings), presence=presence, faults=classify_fault)
    live.add_snapshot_source("pairing", pairings.snapshot)

    async def sweep() -> int:
        return await pairings.sweep() + await hub.sweep()

    await hub.start()
    await presence.start()
    sweeper = Sweeper(sweep, settings.sync_sweep_s)
    sweeper.start()
    return LiveSync(pairings, hub, live, sweeper, redis)
