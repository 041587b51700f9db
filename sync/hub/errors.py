"""The hub exception tree. Vendor errors (Redis, the database driver) are translated into it at the adapter."""

from __future__ import annotations


class HubError(Exception):
    code = "hub_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class HubUnavailable(HubError):
    """The backing store (database or Redis) cannot be reached; retry shortly."""

    code = "hub_unavailable"


class HistoryTrimmed(HubError):
    """Messages after ``after`` are no longer all kept, or ``after`` is not an id of this log.

    ``reason`` is ``"trimmed"`` (retention or the length limit dropped them) or
    ``"reset"`` (``after`` is beyond the log's head, or from before the log was
    lost and started again). Not an error for clients: the session answers it
    with a ``resync`` snapshot and carries on from ``last_id``.
    """

    code = "history_trimmed"

    def __init__(self, pairing_id: str, after: int, last_id: int, reason: str = "trimmed") -> None:
        super().__init__(f"history of {pairing_id} after {after} is gone ({reason}); the stream is at {last_id}")
        self.pairing_id = pairing_id
        self.after = after
        self.last_id = last_id
        self.reason = reason
