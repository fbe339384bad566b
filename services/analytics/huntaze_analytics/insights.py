"""Fan insights: simple models whose every number comes with its reason in words.

* Top spenders: lifetime spend, highest first.
* Churn risk: a subscribed fan whose subscription ends within 7 days with renewal off (score
  70-100, the sooner the higher), or an engaged fan (2+ purchases or 5+ messages) silent for
  `QUIET_DAYS` or more (score 30 plus a point a day of silence, at most 90).
* Expected lifetime value: spend so far plus the next 12 months at the fan's monthly rate
  (spend / months between first seen and last purchase, at least one), weighted by how likely
  the fan still buys: exp(-days since the last purchase / 60), so a fan silent two months
  counts for 37%.
* Quiet whales: fans in the top 10% of spenders (at or above the 90th percentile of paying
  fans' lifetime spend) silent for `QUIET_DAYS` or more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from huntaze.analytics.v1 import analytics_pb2
from huntaze_analytics.repository import LTV_DECAY_DAYS

QUIET_DAYS = 14
LIMIT = 10
LTV_HORIZON_MONTHS = 12
# Renewal off and ending within this: a churn risk.
ENDING_SOON = timedelta(days=7)


def money(cents: int | float) -> str:
    return f"${cents / 100:,.2f}"


def _days(later: datetime, earlier: datetime | None) -> int:
    if earlier is None:
        return 0
    return max(0, (later - earlier).days)


def fan(row: Mapping[str, Any], *, value: int, reason: str) -> analytics_pb2.FanInsight:
    insight = analytics_pb2.FanInsight(
        fan_id=str(row["fan_id"]),
        display_name=row["display_name"],
        platform=row["platform"],
        spend_cents=row["spend_cents"],
        purchases=row["purchases"],
        value=value,
        reason=reason,
    )
    if row["last_active_at"] is not None:
        insight.last_active_at.FromDatetime(row["last_active_at"])
    return insight


def top_spender(row: Mapping[str, Any], *, now: datetime) -> analytics_pb2.FanInsight:
    reason = (
        f"Spent {money(row['spend_cents'])} over {row['purchases']} purchases; last active "
        f"{_days(now, row['last_active_at'])} days ago."
    )
    return fan(row, value=row["spend_cents"], reason=reason)


def churn_risk(row: Mapping[str, Any], *, now: datetime) -> analytics_pb2.FanInsight:
    expires = row["expires_at"]
    if row["state"] == "cancelled" and expires is not None and expires <= now + ENDING_SOON:
        days_left = max(0, math.ceil((expires - now).total_seconds() / 86400))
        score = min(100, 70 + (7 - days_left) * 5)
        reason = (
            f"Renewal is off and the subscription ends in {days_left} days; "
            f"{money(row['spend_cents'])} spent so far."
        )
    else:
        quiet = _days(now, row["last_active_at"])
        score = min(90, 30 + quiet)
        reason = (
            f"Was engaged ({row['purchases']} purchases, {row['messages_in']} messages) and has "
            f"been silent for {quiet} days."
        )
    return fan(row, value=score, reason=reason)


def expected_ltv(row: Mapping[str, Any], *, now: datetime) -> analytics_pb2.FanInsight:
    spend = row["spend_cents"]
    months = max(1.0, _days(row["last_purchase_at"], row["first_seen_at"]) / 30.0)
    monthly = spend / months
    recency = max(0.0, (now - row["last_purchase_at"]).total_seconds() / 86400.0)
    alive = math.exp(-recency / LTV_DECAY_DAYS)
    future = alive * monthly * LTV_HORIZON_MONTHS
    reason = (
        f"Spends about {money(monthly)} a month over {months:.0f} months; last purchase "
        f"{recency:.0f} days ago, so {alive:.0%} likely to keep buying: {money(future)} expected "
        f"over the next 12 months on top of {money(spend)}."
    )
    return fan(row, value=round(spend + future), reason=reason)


def quiet_whale(
    row: Mapping[str, Any], *, now: datetime, threshold: int
) -> analytics_pb2.FanInsight:
    months = max(1.0, _days(row["last_purchase_at"] or now, row["first_seen_at"]) / 30.0)
    monthly = round(row["spend_cents"] / months)
    reason = (
        f"In your top 10% of spenders (from {money(threshold)}) with "
        f"{money(row['spend_cents'])} spent, about {money(monthly)} a month, and silent for "
        f"{_days(now, row['last_active_at'])} days."
    )
    return fan(row, value=monthly, reason=reason)
