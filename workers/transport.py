"""kombu's SQL transport, polling often enough for one learn task per chunk, safe across processes, and
keeping no delivered message.

The SQL transport cannot be woken by a new message; it polls. kombu's default interval (1 s)
is paid again after every task when prefetch is 1, which cost about 1 s per 2 KiB chunk, as
much as the learning step itself. A poll is one small indexed query, so 50 ms is cheap.
The interval cannot go through transport options: this transport hands them all to create_engine.
"""

from __future__ import annotations

import time

from kombu.transport.sqlalchemy import Channel as SqlChannel
from kombu.transport.sqlalchemy import Transport as SqlTransport
from kombu.transport.sqlalchemy.models import metadata
from sqlalchemy.exc import DatabaseError, IntegrityError

# Tries at creating the broker's tables: a lost race needs one more (the next look sees the tables).
CREATE_TABLE_TRIES = 5


class Channel(SqlChannel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._delivered: set[str] = set()  # queues with a delivered row still kept

    def _engine_from_config(self):
        """kombu creates its tables (look, then CREATE) on every process's first use of the broker:
        an API process and a starting worker doing it at once on a new broker file raced, and the
        loser's "table already exists" reached kombu's publish retry, which reuses the closed channel
        (AttributeError in send_task). The tables are made here first, the lost race retried."""
        engine = super()._engine_from_config()
        for attempt in range(1, CREATE_TABLE_TRIES + 1):
            try:
                metadata.create_all(engine)
                return engine
            except DatabaseError:
                if attempt == CREATE_TABLE_TRIES:
                    raise
                time.sleep(0.05 * attempt)
        return engine

    def _get_or_create(self, queue):
        """kombu creates a queue's row under a lock of its own process only: when an API process
        and a starting worker declare the same queue at once, the loser's insert breaks the unique
        name (seen killing a worker at start-up). The winner's row is the one wanted: use it."""
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()

    def _get(self, queue):
        """kombu marks a delivered message invisible and never reads it again (this transport redelivers
        nothing: workers.tasks requeues from SQL at start), yet keeps its row: one row per task, forever. A
        queue's delivered rows go at the next poll of that queue after a delivery, when the task taken is
        done (one is prefetched at a time), so an embedded broker stays as small as its backlog."""
        if queue in self._delivered:
            self._delivered.discard(queue)
            queue_id = self._get_or_create(queue).id
            self.session.query(self.message_cls).filter(self.message_cls.queue_id == queue_id,
                                                        self.message_cls.visible.is_(False)).delete()
            self.session.commit()
        payload = super()._get(queue)  # raises Empty when there is none
        self._delivered.add(queue)
        return payload



class Transport(SqlTransport):
    Channel = Channel
    polling_interval = 0.05
