"""The streams of the OnlyFans worker: its own context's, and the CRM's, whose send requests it
consumes (made only when missing: the CRM owns it)."""

from __future__ import annotations

from huntaze_kit.streams import context_stream

ONLYFANS = context_stream("onlyfans", "Events of the OnlyFans worker.")
CRM = context_stream("crm")
