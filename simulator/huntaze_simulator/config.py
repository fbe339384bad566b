"""What the simulator lets a test or the demo tune: the platform behaviours public sources disagree
on or leave unmeasured. Every field can also be changed at run time (`PATCH /_control/config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    seed: int = 1
    # Login.
    bot_challenge: bool = False
    otp_required: bool = False
    # Session lifetime from login or import (the real one is unknown; OFAuth shows an `expiredAt`).
    session_ttl_seconds: float = Field(default=30 * 24 * 3600, gt=0)
    # A request whose cookies, user-id, x-bc or user-agent disagree ends the session when true
    # (what users report: a scraper with wrong values logs the browser out).
    end_session_on_mismatch: bool = True
    # Signing: which `time` units are accepted (the web client sends ms, two clients send seconds),
    # how far `time` may be from the server clock (None: unchecked), and how long the previous rule
    # set keeps working after a rotation.
    time_units: Literal["ms", "s", "both"] = "both"
    max_clock_skew_seconds: float | None = None
    rules_grace_seconds: float = Field(default=0.0, ge=0)
    # Rate limit: at most `rate_limit_requests` per `rate_limit_window_seconds`, then every request
    # answers 429 for `rate_limit_block_seconds`; counted per session, or per client address as
    # the platform is reported to do.
    rate_limit_requests: int = Field(default=1000, gt=0)
    rate_limit_window_seconds: float = Field(default=300.0, gt=0)
    rate_limit_block_seconds: float = Field(default=300.0, ge=0)
    rate_limit_scope: Literal["session", "ip"] = "session"
    # "Allow 3 seconds": one send (DM or mass message) per this many seconds per session.
    send_interval_seconds: float = Field(default=3.0, ge=0)
    # Message pages come back short while more remain (clients must follow `hasMore`).
    message_page_fill: float = Field(default=0.7, gt=0, le=1)
    # Mass messages reach this many recipients per second (the queue is asynchronous).
    mass_delivery_per_second: float = Field(default=200.0, gt=0)
    # Demo: how often a fan does something, in seconds (0: no steady activity).
    demo_activity_seconds: float = Field(default=4.0, ge=0)
