"""kombu's SQL transport, polling often enough for one learn task per chunk, safe across processes.

The SQL transport cannot be woken by a new message; it polls. kombu's default interval (1 s)
is paid again after every task when prefetch is 1, which cost about 1 s per 2 KiB chunk, as
much as the learning step itself. A poll is one small indexed query, so 50 ms is cheap.
The interval cannot go through transport options: this transport hands them all to create_engine.
"""

from __future__ import annotations

from kombu.transport.sqlalchemy import Channel as SqlChannel
from kombu.transport.sqlalchemy import Transport as SqlTransport
from sqlalchemy.exc import IntegrityError


class Channel(SqlChannel):
    def _get_or_create(self, queue):
        """kombu creates a queue's row under a lock of its own process only: when an API process
        and a starting worker declare the same queue at once, the loser's insert breaks the unique
        name (seen killing a worker at start-up). The winner's row is the one wanted: use it."""
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()


class Transport(SqlTransport):
    Channel = Channel
    polling_interval = 0.05
