"""The streams of the OnlyFans worker: its own context's, the CRM's, whose send requests it
consumes, and the campaigns', whose mass-message commands it runs (those two made only when
missing: their services own them)."""

from __future__ import annotations

from huntaze_kit.streams import context_stream

ONLYFANS = context_stream("onlyfans", "Events of the OnlyFans worker.")
CRM = context_stream("crm")
CAMPAIGNS = context_stream("campaigns")
