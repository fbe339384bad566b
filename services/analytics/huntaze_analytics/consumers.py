"""One durable consumer per context stream (`analytics-<context>`), each taking its events a
batch at a time into the events table and the rollups (`AnalyticsService.ingest`), applied once
through the kit's deduplication."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_analytics.facts import SUBJECTS
from huntaze_analytics.models import SCHEMA
from huntaze_analytics.service import AnalyticsService
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.streams import context_stream


def event_consumers(
    *,
    nats: NatsClient,
    session_factory: async_sessionmaker[AsyncSession],
    service: AnalyticsService,
    batch: int = 1000,
) -> list[EventConsumer]:
    return [
        EventConsumer(
            nats=nats,
            session_factory=session_factory,
            schema=SCHEMA,
            durable=f"analytics-{context}",
            stream=context_stream(context).name,
            filter_subjects=list(subjects),
            batch_handler=service.ingest,
            batch=batch,
            # A whole pull in one transaction: a chunk costs the same few round trips
            # whatever its size, so under a backlog the larger the faster.
            max_per_transaction=batch,
        )
        for context, subjects in SUBJECTS.items()
    ]
