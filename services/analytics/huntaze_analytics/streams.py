"""The streams analytics reads: every context's. It owns none; each is made when missing, so
analytics can start before the service that owns it ever has."""

from __future__ import annotations

from huntaze_analytics.facts import SUBJECTS
from huntaze_kit.streams import StreamSpec, context_stream

READS: tuple[StreamSpec, ...] = tuple(context_stream(context) for context in SUBJECTS)
