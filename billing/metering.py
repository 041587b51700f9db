"""One paid call: idempotency, credits reserved before the work, charged only on success.

::

    async with metering.call(key, operation="clip", idempotency_key=k, fingerprint=f) as call:
        if call.replay:
            return call.replay          # the first response, not charged again
        result = await do_the_work()
        response = await call.succeed(lambda charge: render(result, charge))

Leaving the block without ``succeed`` (an exception, a cancellation) gives the credits
back and frees the idempotency key: no error is ever charged. A database fault can make
that undo fail too (a locked or full database); the undo is then kept and retried by
``retry_undos`` (billing's maintenance loop) rather than left to the stale-reservation
sweep. The charge, its ledger row and the kept response are one transaction, so a fault
never charges without a record; when the answer to that commit is lost, the ledger row
says whether it went through, and if it did the call succeeded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from .idempotency import IdempotencyStore, StoredResponse
from .keys import KeyInfo
from .ledger import Charge, Ledger, Reservation
from .plans import PRICES

T = TypeVar("T")

log = logging.getLogger("arclip.billing")


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
        reservation = self.reservation
        rendered: list[tuple[Charge, StoredResponse]] = []

        async def then(session: AsyncSession, charge: Charge) -> None:
            rendered.append((charge, render(charge)))
            if self._idempotency_key is not None:
                await self._metering.idempotency.complete(session, self._scope, self._idempotency_key, rendered[0][1])

        try:
            self.charge = await _uncancellable(self._metering.ledger.settle(reservation, then))
        except Exception:
            if not rendered or not await self._metering.committed(reservation):
                raise
            # The commit went through and only its answer was lost: the client gets what it paid for.
            log.warning("settling %s raised after its commit; answered as charged", reservation.id, exc_info=True)
            self.charge = rendered[0][0]
        return rendered[0][1]


@dataclass
class _Undo:
    """What is left to undo of a failed call: its reservation, its idempotency key."""

    reservation: Reservation | None
    scope: str
    idempotency_key: str | None


class Metering:
    def __init__(self, ledger: Ledger, idempotency: IdempotencyStore) -> None:
        self.ledger = ledger
        self.idempotency = idempotency
        self._undos: list[_Undo] = []  # undos the database refused, retried by retry_undos

    @property
    def pending_undos(self) -> int:
        return len(self._undos)

    async def committed(self, reservation: Reservation) -> bool:
        """Whether the reservation was charged; False when that cannot be read either."""
        try:
            return await self.ledger.status(reservation.id) == "charged"
        except Exception:
            log.warning("cannot read back reservation %s", reservation.id, exc_info=True)
            return False

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
                await _uncancellable(self._undo(_Undo(None, scope, idempotency_key)))
            raise
        call = PaidCall(self, reservation=reservation, scope=scope, idempotency_key=idempotency_key)
        try:
            yield call
        finally:
            if call.charge is None:
                await _uncancellable(self._undo(_Undo(reservation, scope, idempotency_key)))

    async def _undo(self, undo: _Undo) -> bool:
        """Give the credits back, then free the key; on a failure keep what is left for later.

        Never raises: the caller is already handling the error that made the undo necessary.
        """
        try:
            if undo.reservation is not None:
                if not await self.ledger.release(undo.reservation):
                    # Released as stale meanwhile, or charged after all (a commit whose answer
                    # was lost, then a failed read-back): worth a look when it is the latter.
                    log.warning("reservation %s was no longer reserved when undone", undo.reservation.id)
                undo.reservation = None
            if undo.idempotency_key is not None:
                await self.idempotency.abandon(undo.scope, undo.idempotency_key)
        except Exception:
            log.warning("undoing a failed call failed; retried later", exc_info=True)
            self._undos.append(undo)
            return False
        return True

    async def retry_undos(self) -> int:
        """Retry the undos the database refused; the number done."""
        undos, self._undos = self._undos, []
        for done, undo in enumerate(undos):
            if not await _uncancellable(self._undo(undo)):
                self._undos.extend(undos[done + 1 :])  # the database still refuses: wait for the next round
                return done
        return len(undos)
