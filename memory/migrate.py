"""Alembic migrations, driven from code (`upgrade(url)`) or from `alembic -c alembic.ini`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from memory.db import make_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Passed as an attribute, not an option, so '%' in passwords needs no escaping.
    config.attributes["url"] = url
    return config


def _run(url: str, action, revision: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # SQLite changes a table by copying it and dropping the old one; with foreign keys
                # enforced, that drop would cascade-delete every row referring to it. The pragma only
                # takes effect outside a transaction, so it is set before the migration's own.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
            with connection.begin():
                config = alembic_config(url)
                config.attributes["connection"] = connection
                action(config, revision)
                if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()):
                    raise RuntimeError(f"a migration left rows whose references are gone: {broken[:5]}")
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    _run(url, command.upgrade, revision)


def downgrade(url: str, revision: str) -> None:
    _run(url, command.downgrade, revision)
