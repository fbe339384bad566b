# ruff: noqa: S608  (SQL text is built from this module's own constant identifiers only)
"""Reads of the `analytics` schema for the API, on the read pool (single statements, no
transaction), and the writes of insight snapshots and summaries. Nothing here commits: the
service layer does (writes take a connection inside the service's transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from huntaze_analytics.models import ROLLUP_COUNTS, SCHEMA

S = SCHEMA
_SUMS = ", ".join(f"coalesce(sum({name}), 0)::int8 AS {name}" for name in ROLLUP_COUNTS)
_FAN_COLUMNS = (
    "fan_id, display_name, platform, spend_cents, purchases, last_active_at, first_seen_at,"
    " last_purchase_at, state, expires_at, messages_in"
)


@dataclass(frozen=True, slots=True)
class Creator:
    timezone: str
    fans_total: int
    subscribers: int


async def creator(pool: asyncpg.Pool, creator_id: uuid.UUID) -> Creator:
    row = await pool.fetchrow(
        f"SELECT timezone, fans_total, subscribers FROM {S}.creators WHERE creator_id = $1",
        creator_id,
    )
    if row is None:
        return Creator("UTC", 0, 0)
    return Creator(row[0], row[1], row[2])


async def sums(
    pool: asyncpg.Pool, creator_id: uuid.UUID, *, split: date, start: date, end: date
) -> tuple[dict[str, int], dict[str, int]]:
    """The rollups' totals from `split` to `end` and from `start` to the day before `split`."""
    rows = await pool.fetch(
        f"SELECT day >= $2 AS current, {_SUMS} FROM {S}.daily_rollups"
        " WHERE creator_id = $1 AND day BETWEEN $3 AND $4 GROUP BY 1",
        creator_id,
        split,
        start,
        end,
    )
    empty = dict.fromkeys(ROLLUP_COUNTS, 0)
    current, previous = dict(empty), dict(empty)
    for row in rows:
        (current if row["current"] else previous).update({k: row[k] for k in ROLLUP_COUNTS})
    return current, previous


@dataclass(frozen=True, slots=True)
class Figures:
    """The period's figures of the rollups and the fans, read together."""

    current: dict[str, int]
    previous: dict[str, int]
    platforms: list[tuple[str, int, int]]
    buckets: dict[int, int]
    events: list[tuple[str, int]]
    active: int
    expiring: int
    unread: int
    active_campaigns: int


def _totals(row: Any) -> dict[str, int]:
    found = orjson.loads(row) if row else {}
    return {name: int(found.get(name) or 0) for name in ROLLUP_COUNTS}


async def figures(
    pool: asyncpg.Pool,
    creator_id: uuid.UUID,
    *,
    previous_start: date,
    start: date,
    end: date,
    now: datetime,
    prefix: str,
) -> Figures:
    """Every figure of the overview but the fans' own rows, in one statement (one round trip:
    the answer's latency is mostly round trips)."""
    row = await pool.fetchrow(
        f"SELECT (SELECT to_json(s) FROM (SELECT {_SUMS} FROM {S}.daily_rollups"
        "   WHERE creator_id = $1 AND day BETWEEN $3 AND $4) s),"
        f" (SELECT to_json(s) FROM (SELECT {_SUMS} FROM {S}.daily_rollups"
        "   WHERE creator_id = $1 AND day >= $2 AND day < $3) s),"
        " (SELECT json_agg(json_build_array(platform, cents, n) ORDER BY cents DESC, platform)"
        "   FROM (SELECT platform, sum(revenue_cents)::int8 AS cents, sum(purchases)::int8 AS n"
        f"   FROM {S}.platform_revenue WHERE creator_id = $1 AND day BETWEEN $3 AND $4"
        "   GROUP BY platform) p),"
        " (SELECT json_agg(json_build_array(bucket, n)) FROM (SELECT bucket, sum(replies) AS n"
        f"   FROM {S}.response_buckets WHERE creator_id = $1 AND day BETWEEN $3 AND $4"
        "   GROUP BY bucket) b),"
        " (SELECT json_agg(json_build_array(event_type, n) ORDER BY event_type)"
        "   FROM (SELECT event_type, sum(events) AS n"
        f"   FROM {S}.event_counts WHERE creator_id = $1 AND day BETWEEN $3 AND $4"
        "   AND starts_with(event_type, $6) GROUP BY event_type) e),"
        f" (SELECT coalesce(sum(fans), 0)::int8 FROM {S}.active_days"
        "   WHERE creator_id = $1 AND day >= $3),"
        f" (SELECT count(*) FROM {S}.fans WHERE creator_id = $1 AND state = 'cancelled'"
        "   AND expires_at BETWEEN $5::timestamptz AND $5::timestamptz + interval '7 days'"
        "   AND NOT deleted),"
        f" (SELECT count(*) FROM {S}.unread_messages WHERE creator_id = $1),"
        f" (SELECT count(*) FROM {S}.campaigns WHERE creator_id = $1 AND active)",
        creator_id,
        previous_start,
        start,
        end,
        now,
        prefix,
    )
    assert row is not None
    return Figures(
        current=_totals(row[0]),
        previous=_totals(row[1]),
        platforms=[(p[0], int(p[1]), int(p[2])) for p in orjson.loads(row[2] or "[]")],
        buckets={int(b[0]): int(b[1]) for b in orjson.loads(row[3] or "[]")},
        events=[(e[0], int(e[1])) for e in orjson.loads(row[4] or "[]")],
        active=row[5],
        expiring=row[6],
        unread=row[7],
        active_campaigns=row[8],
    )


async def top_fans(
    pool: asyncpg.Pool, creator_id: uuid.UUID, *, limit: int
) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            f"SELECT {_FAN_COLUMNS} FROM {S}.fans WHERE creator_id = $1 AND NOT deleted"
            " AND spend_cents > 0 ORDER BY spend_cents DESC, fan_id DESC LIMIT $2",
            creator_id,
            limit,
        )
    )


async def accounts_needing_attention(
    pool: asyncpg.Pool, creator_id: uuid.UUID
) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            f"SELECT platform, reason, message, since FROM {S}.accounts"
            " WHERE creator_id = $1 AND needs_attention ORDER BY platform",
            creator_id,
        )
    )


async def daily_rows(
    pool: asyncpg.Pool, creator_id: uuid.UUID, *, start: date, end: date
) -> dict[date, dict[str, int]]:
    """Each day's rollup with its active fans (days without any are missing)."""
    rows = await pool.fetch(
        f"SELECT r.day, {', '.join(f'r.{n}' for n in ROLLUP_COUNTS)},"
        f" (SELECT count(*) FROM {S}.fan_days f WHERE f.creator_id = r.creator_id"
        "   AND f.day = r.day) AS active_fans"
        f" FROM {S}.daily_rollups r WHERE r.creator_id = $1 AND r.day BETWEEN $2 AND $3",
        creator_id,
        start,
        end,
    )
    return {row["day"]: {k: row[k] for k in (*ROLLUP_COUNTS, "active_fans")} for row in rows}


async def hourly_rows(
    pool: asyncpg.Pool, creator_id: uuid.UUID, *, start: datetime, end: datetime
) -> dict[datetime, dict[str, int]]:
    rows = await pool.fetch(
        f"SELECT hour, {', '.join(ROLLUP_COUNTS)} FROM {S}.hourly_rollups"
        " WHERE creator_id = $1 AND hour >= $2 AND hour < $3",
        creator_id,
        start,
        end,
    )
    return {row["hour"]: {k: row[k] for k in ROLLUP_COUNTS} for row in rows}


# -- insights -------------------------------------------------------------------------------


async def churn_candidates(
    pool: asyncpg.Pool, creator_id: uuid.UUID, *, now: datetime, quiet_days: int, limit: int
) -> list[asyncpg.Record]:
    """Subscribed fans whose subscription ends within 7 days with renewal off, or who were
    engaged (2+ purchases or 5+ messages) and went quiet for `quiet_days`; the most valuable
    first."""
    return list(
        await pool.fetch(
            f"SELECT {_FAN_COLUMNS} FROM {S}.fans WHERE creator_id = $1 AND NOT deleted AND ("
            " (state = 'cancelled'"
            "     AND expires_at BETWEEN $2::timestamptz AND $2::timestamptz + interval '7 days')"
            " OR (state IN ('active', 'cancelled')"
            "     AND last_active_at < $2::timestamptz - make_interval(days => $3::int)"
            "     AND (purchases >= 2 OR messages_in >= 5)))"
            " ORDER BY spend_cents DESC, fan_id DESC LIMIT $4",
            creator_id,
            now,
            quiet_days,
            limit,
        )
    )


async def ltv_candidates(
    pool: asyncpg.Pool, creator_id: uuid.UUID, *, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Paying fans by expected spend over the next year (see `insights.expected_ltv`, which
    this orders by, computed here the same way)."""
    return list(
        await pool.fetch(
            f"SELECT {_FAN_COLUMNS} FROM {S}.fans WHERE creator_id = $1 AND NOT deleted"
            " AND purchases > 0 ORDER BY"
            " exp(-extract(epoch FROM $2::timestamptz - last_purchase_at) / 86400.0 / $3::float8)"
            " * spend_cents / greatest(1.0,"
            "   extract(epoch FROM last_purchase_at - first_seen_at) / 86400.0 / 30.0) DESC,"
            " fan_id LIMIT $4",
            creator_id,
            now,
            LTV_DECAY_DAYS,
            limit,
        )
    )


LTV_DECAY_DAYS = 60.0


async def quiet_whales(
    pool: asyncpg.Pool, creator_id: uuid.UUID, *, now: datetime, quiet_days: int, limit: int
) -> tuple[int, list[asyncpg.Record]]:
    """The spend that makes a whale (the 90th percentile of paying fans) and the whales silent
    for `quiet_days`."""
    threshold = await pool.fetchval(
        "SELECT coalesce(percentile_disc(0.9) WITHIN GROUP (ORDER BY spend_cents), 0)"
        f" FROM {S}.fans WHERE creator_id = $1 AND NOT deleted AND spend_cents > 0",
        creator_id,
    )
    if not threshold:
        return 0, []
    rows = await pool.fetch(
        f"SELECT {_FAN_COLUMNS} FROM {S}.fans WHERE creator_id = $1 AND NOT deleted"
        " AND spend_cents >= $2"
        " AND last_active_at < $3::timestamptz - make_interval(days => $4::int)"
        " ORDER BY spend_cents DESC, fan_id DESC LIMIT $5",
        creator_id,
        threshold,
        now,
        quiet_days,
        limit,
    )
    return int(threshold), list(rows)


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: int
    period: str
    period_start: date
    period_end: date
    raw: dict[str, Any]
    created_at: datetime
    summary: str | None
    written_by: str | None
    summarized_at: datetime | None


async def latest_snapshot(
    pool: asyncpg.Pool, creator_id: uuid.UUID, *, period: str
) -> Snapshot | None:
    row = await pool.fetchrow(
        f"SELECT s.id, s.period, s.period_start, s.period_end, s.raw, s.created_at,"
        " m.summary, m.written_by, m.created_at"
        f" FROM {S}.insight_snapshots s LEFT JOIN LATERAL ("
        f"   SELECT summary, written_by, created_at FROM {S}.insight_summaries"
        "   WHERE snapshot_id = s.id ORDER BY created_at DESC LIMIT 1) m ON true"
        " WHERE s.creator_id = $1 AND s.period = $2 ORDER BY s.created_at DESC, s.id DESC"
        " LIMIT 1",
        creator_id,
        period,
    )
    if row is None:
        return None
    return Snapshot(
        id=row[0],
        period=row[1],
        period_start=row[2],
        period_end=row[3],
        raw=orjson.loads(row[4]),
        created_at=row[5],
        summary=row[6],
        written_by=row[7],
        summarized_at=row[8],
    )


async def save_snapshot(
    conn: asyncpg.Connection,
    *,
    creator_id: uuid.UUID,
    period: str,
    start: date,
    end: date,
    raw: dict[str, Any],
) -> int:
    snapshot_id: int = await conn.fetchval(
        f"INSERT INTO {S}.insight_snapshots (creator_id, period, period_start, period_end, raw)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id",
        creator_id,
        period,
        start,
        end,
        orjson.dumps(raw).decode(),
    )
    return snapshot_id


async def save_summary(
    conn: asyncpg.Connection,
    *,
    snapshot_id: int,
    creator_id: uuid.UUID,
    period: str,
    summary: str,
    written_by: str,
) -> datetime:
    created: datetime = await conn.fetchval(
        f"INSERT INTO {S}.insight_summaries (snapshot_id, creator_id, period, summary, written_by)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
        snapshot_id,
        creator_id,
        period,
        summary,
        written_by,
    )
    return created


def pairs(rows: Sequence[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(row) for row in rows]
