"""`lifelong migrate`: bring the configured database to the newest schema (compose runs it before the api)."""

from __future__ import annotations

import argparse
import sys


def _migrate(args: argparse.Namespace) -> int:
    # Imported here: every `lifelong` command registers this one, and Alembic is slow to import.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from memory.migrate import upgrade
    from settings import Settings

    settings = Settings()
    shown = make_url(settings.resolved_database_url).render_as_string()  # the password hidden
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the embedded SQLite file's directory
    try:
        upgrade(settings.resolved_database_url)
    except OperationalError as exc:
        reason = " ".join(str(exc.orig).split())  # psycopg's messages span lines; the CLI's errors do not
        print(f"lifelong migrate: cannot use the database at {shown}: {reason}", file=sys.stderr)
        return 1
    print(f"database at the newest schema: {shown}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    migrate = commands.add_parser("migrate", help="upgrade the database (LIFELONG_DATABASE_URL) to the newest schema")
    migrate.set_defaults(handler=_migrate)
