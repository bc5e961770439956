"""kombu's SQL transport, polling often enough for one learn task per chunk.

The SQL transport cannot be woken by a new message; it polls. kombu's default interval (1 s)
is paid again after every task when prefetch is 1, which cost about 1 s per 2 KiB chunk, as
much as the learning step itself. A poll is one small indexed query, so 50 ms is cheap.
The interval cannot go through transport options: this transport hands them all to create_engine.
"""

from __future__ import annotations

from kombu.transport.sqlalchemy import Transport as SqlTransport


class Transport(SqlTransport):
    polling_interval = 0.05
