"""The pairing lifecycle as an explicit state machine.

::

    opened ──claim──▶ active ──claim──▶ active      (another phone, up to the limit)
      │  │              │  │
      │  └──close──┐    │  └──expire──▶ expired     (lifetime over)
      │            ▼    ▼
      │          closed ◀──close──      (unpaired by the desktop)
      └──expire──▶ expired              (code lapsed, nobody claimed it)

``closed`` and ``expired`` are terminal: every event on them is illegal.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import IllegalTransition


class PairingState(StrEnum):
    OPENED = "opened"
    ACTIVE = "active"
    CLOSED = "closed"
    EXPIRED = "expired"


class PairingEvent(StrEnum):
    CLAIM = "claim"
    CLOSE = "close"
    EXPIRE = "expire"


TRANSITIONS: dict[tuple[PairingState, PairingEvent], PairingState] = {
    (PairingState.OPENED, PairingEvent.CLAIM): PairingState.ACTIVE,
    (PairingState.OPENED, PairingEvent.CLOSE): PairingState.CLOSED,
    (PairingState.OPENED, PairingEvent.EXPIRE): PairingState.EXPIRED,
    (PairingState.ACTIVE, PairingEvent.CLAIM): PairingState.ACTIVE,
    (PairingState.ACTIVE, PairingEvent.CLOSE): PairingState.CLOSED,
    (PairingState.ACTIVE, PairingEvent.EXPIRE): PairingState.EXPIRED,
}

LIVE = frozenset({PairingState.OPENED, PairingState.ACTIVE})
TERMINAL = frozenset({PairingState.CLOSED, PairingState.EXPIRED})


def transition(state: PairingState | str, event: PairingEvent | str) -> PairingState:
    """The state after ``event``; ``IllegalTransition`` when the machine does not allow it."""
    state, event = PairingState(state), PairingEvent(event)
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state.value, event.value) from None
