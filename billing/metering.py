"""One paid call: idempotency, credits reserved before the work, charged only on success.

::

    async with metering.call(key, operation="clip", idempotency_key=k, fingerprint=f) as call:
        if call.replay:
            return call.replay          # the first response, not charged again
        result = await do_the_work()
        response = await call.succeed(lambda charge: render(result, charge))

Leaving the block without ``succeed`` (an exception, a cancellation) gives the credits
back and frees the idempotency key: no error is ever charged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from .idempotency import IdempotencyStore, StoredResponse
from .keys import KeyInfo
from .ledger import Charge, Ledger, Reservation
from .plans import PRICES

T = TypeVar("T")


async def _uncancellable(work: Awaitable[T]) -> T:
    """Run ``work`` to the end even if the caller is cancelled meanwhile."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


class PaidCall:
    def __init__(
        self,
        metering: Metering,
        *,
        replay: StoredResponse | None = None,
        reservation: Reservation | None = None,
        scope: str = "",
        idempotency_key: str | None = None,
    ) -> None:
        self._metering = metering
        self.replay = replay
        self.reservation = reservation
        self._scope = scope
        self._idempotency_key = idempotency_key
        self.charge: Charge | None = None

    async def succeed(self, render: Callable[[Charge], StoredResponse]) -> StoredResponse:
        """Charge the reservation and build the response from the charge, atomically."""
        assert self.reservation is not None and self.charge is None, "succeed() once, on a call that was not replayed"
        rendered: list[StoredResponse] = []

        async def then(session: AsyncSession, charge: Charge) -> None:
            rendered.append(render(charge))
            if self._idempotency_key is not None:
                await self._metering.idempotency.complete(session, self._scope, self._idempotency_key, rendered[0])

        self.charge = await _uncancellable(self._metering.ledger.settle(self.reservation, then))
        return rendered[0]


class Metering:
    def __init__(self, ledger: Ledger, idempotency: IdempotencyStore) -> None:
        self.ledger = ledger
        self.idempotency = idempotency

    @staticmethod
    def price(operation: str) -> int:
        return PRICES[operation]

    @asynccontextmanager
    async def call(
        self,
        key: KeyInfo,
        *,
        operation: str,
        price: int | None = None,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        request_id: str | None = None,
    ) -> AsyncIterator[PaidCall]:
        scope = f"{key.account_id}:{key.mode}"
        if idempotency_key is not None:
            replay = await self.idempotency.begin(scope, idempotency_key, fingerprint)
            if replay is not None:
                yield PaidCall(self, replay=replay)
                return
        try:
            reservation = await self.ledger.reserve(
                key, self.price(operation) if price is None else price, operation=operation, request_id=request_id
            )
        except BaseException:
            if idempotency_key is not None:
                await _uncancellable(self.idempotency.abandon(scope, idempotency_key))
            raise
        call = PaidCall(self, reservation=reservation, scope=scope, idempotency_key=idempotency_key)
        try:
            yield call
        finally:
            if call.charge is None:
                await _uncancellable(self._undo(reservation, scope, idempotency_key))

    async def _undo(self, reservation: Reservation, scope: str, idempotency_key: str | None) -> None:
        await self.ledger.release(reservation)
        if idempotency_key is not None:
            await self.idempotency.abandon(scope, idempotency_key)
