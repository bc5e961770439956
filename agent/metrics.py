"""Prometheus metrics: request counts and latencies as they happen, sizes and lag read from SQL at scrape time."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memory.schema import Document, Event, Memory

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _StoreCollector:
    """Totals over all agents (per-agent labels would tell a scraper which agents exist)."""

    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def collect(self):
        with self.sessions() as db:
            lag = db.scalar(select(func.count()).select_from(Event).where(
                Event.learned_at.is_(None), Event.failed_reason.is_(None)))
            learned = db.scalar(select(func.coalesce(func.sum(func.length(Event.content)), 0))
                                .where(Event.learned_at.is_not(None)))
            memories, tokens = db.execute(select(func.count(), func.coalesce(func.sum(Memory.num_tokens), 0))).one()
            documents = dict(db.execute(select(Document.status, func.count()).group_by(Document.status)).all())
        yield GaugeMetricFamily("lifelong_queue_lag_events", "events logged and not yet learned", value=lag)
        yield GaugeMetricFamily("lifelong_bytes_learned", "bytes of events learned", value=learned)
        yield GaugeMetricFamily("lifelong_memory_rows", "memory rows in SQL", value=memories)
        yield GaugeMetricFamily("lifelong_memory_tokens", "retrieval (key, value) pairs in SQL", value=tokens)
        by_status = GaugeMetricFamily("lifelong_documents", "documents by status", labels=["status"])
        for status, count in documents.items():
            by_status.add_metric([status], count)
        yield by_status


class Metrics:
    def __init__(self, sessions: sessionmaker[Session]):
        self.registry = CollectorRegistry()
        self.requests = Counter("lifelong_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("lifelong_http_request_seconds", "time to the end of the response",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.first_byte = Histogram("lifelong_chat_first_byte_seconds", "chat turn: request to first reply byte",
                                    buckets=LATENCY_BUCKETS, registry=self.registry)
        self.reply_bytes = Counter("lifelong_chat_reply_bytes", "bytes of replies generated", registry=self.registry)
        self.document_bytes = Counter("lifelong_document_bytes_received", "document bytes received",
                                      registry=self.registry)
        self.registry.register(_StoreCollector(sessions))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every request by its route template (ids would explode the label space)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            metrics: Metrics = scope["app"].state.services.metrics
            template = getattr(scope.get("route"), "path", "unmatched")
            metrics.requests.labels(scope["method"], template, str(status)).inc()
            metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - started)
