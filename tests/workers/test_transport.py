"""The embedded SQL transport: its tables and a queue, each created by two processes at once."""

from kombu import Connection
from kombu.transport.sqlalchemy.models import metadata
from sqlalchemy import create_engine
from sqlalchemy.dialects.sqlite.base import SQLiteDialect

from workers.transport import Channel


def test_tables_another_process_created_meanwhile_are_used_not_fatal(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    real_has_table, looks = SQLiteDialect.has_table, []

    def created_just_after_the_first_look(dialect, connection, table_name, *args, **kwargs):
        if not looks:  # the other process (the worker starting) creates the tables right after we looked
            looks.append(table_name)
            other = create_engine(url)
            metadata.create_all(other)
            other.dispose()
            return False
        return real_has_table(dialect, connection, table_name, *args, **kwargs)

    monkeypatch.setattr(SQLiteDialect, "has_table", created_just_after_the_first_look)
    with Connection(url, transport="workers.transport:Transport") as api:
        channel = api.default_channel
        channel._put("learn", {"body": "x"})
        assert looks and channel._size("learn") == 1


def test_a_queue_another_process_created_meanwhile_is_used_not_fatal(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    with Connection(url, transport="workers.transport:Transport") as api, \
            Connection(url, transport="workers.transport:Transport") as worker:
        worker_channel = worker.default_channel
        worker_channel._get_or_create("learn")  # the worker's process declared it first
        api_channel = api.default_channel
        # The API process looked before that row existed: its first look-ups (kombu looks twice) miss.
        real_query, misses = api_channel.session.query, iter([True, True])

        class MissingFirst:
            def __init__(self, *entities):
                self.inner = real_query(*entities)

            def filter(self, *criteria):
                self.inner = self.inner.filter(*criteria)
                return self

            def first(self):
                return None if next(misses, False) else self.inner.first()

            def one(self):
                return self.inner.one()

        monkeypatch.setattr(api_channel.session, "query", MissingFirst)
        queue = Channel._get_or_create(api_channel, "learn")
        monkeypatch.undo()
        assert queue.name == "learn" and queue.id == worker_channel._get_or_create("learn").id
        api_channel._put("learn", {"body": "x"})  # the channel still works after the failed insert
        assert worker_channel._size("learn") == 1
