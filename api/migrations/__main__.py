"""Alembic's own command line on arclip's migrations, for writing revisions.

    python -m api.migrations revision --autogenerate -m "what changes"
    python -m api.migrations check

It connects to ``ARCLIP_DATABASE_URL`` (default: the data dir's SQLite), which must
be at the head revision first. Operators use ``arclip db`` instead.
"""

from __future__ import annotations

import sys

from alembic.config import CommandLine

from api.migrations import alembic_config


def main(argv: list[str] | None = None) -> None:
    cli = CommandLine(prog="python -m api.migrations")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    cli.run_cmd(alembic_config(), options)


if __name__ == "__main__":
    main(sys.argv[1:])
