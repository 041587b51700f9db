"""Strict request parameters (SPEC §5): an unknown, repeated or contradictory parameter is a 422.

A misspelt option silently ignored is a request charged for something the caller did not
ask for (Stripe's rule: unknown parameters are errors). Names echoed back are cut to a
short prefix, so a hostile name never comes back whole.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping

from starlette.requests import Request

from segmentation.errors import echo as _bounded

from ..errors import ApiProblem

_ECHO = 40  # characters of a client's parameter name an answer repeats


def echo(name: str) -> str:
    return _bounded(name, _ECHO)


def unknown_parameter(name: str, known: Collection[str]) -> ApiProblem:
    nearest = difflib.get_close_matches(name.strip().lower(), list(known), n=1, cutoff=0.6)
    hint = f"did you mean {nearest[0]!r}?" if nearest else f"known: {', '.join(sorted(known)) or 'none'}."
    extra = {"did_you_mean": nearest[0]} if nearest else {}
    return ApiProblem(
        422, "unknown_parameter", f"Unknown parameter {echo(name)!r}; {hint}", parameter=echo(name), **extra
    )


def duplicate_parameter(name: str) -> ApiProblem:
    return ApiProblem(
        422, "duplicate_parameter", f"The parameter {echo(name)!r} was sent more than once; send it once.",
        parameter=echo(name),
    )


def strict_values(items: Iterable[tuple[str, str]], known: Collection[str], ignored: Collection[str] = ()) -> dict[str, str]:
    """``items`` as a dict, refusing names outside ``known`` and names given twice (``ignored`` pass)."""
    values: dict[str, str] = {}
    for name, value in items:
        if name in ignored:
            continue
        if name not in known:
            raise unknown_parameter(name, known)
        if name in values:
            raise duplicate_parameter(name)
        values[name] = value
    return values


def query_values(request: Request, known: Collection[str], ignored: Collection[str] = ()) -> dict[str, str]:
    """The query string's options; ``ignored`` names (e.g. ``token``) are read elsewhere."""
    return strict_values(request.query_params.multi_items(), known, ignored)


def _same(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def merge_values(query: Mapping[str, str], form: Mapping[str, str]) -> dict[str, str]:
    """Query and form options together; the same option with two different values is refused."""
    for name in query.keys() & form.keys():
        if not _same(query[name], form[name]):
            raise ApiProblem(
                422,
                "conflicting_parameter",
                f"{name} is {echo(query[name])!r} in the query but {echo(form[name])!r} in the form; send one value.",
                parameter=name,
            )
    return {**query, **form}
