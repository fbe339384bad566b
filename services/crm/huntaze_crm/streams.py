"""The streams of the CRM: its own context's, and the OnlyFans worker's, which it consumes.

The CRM owns `CRM` (created or updated at its start). `ONLYFANS` belongs to the OnlyFans worker:
the CRM only makes sure it exists, so its consumers can start before the worker ever has; both
sides derive the same stream from the context's name (`huntaze_kit.streams.context_stream`).
"""

from __future__ import annotations

from huntaze_kit.streams import context_stream

CRM = context_stream("crm", "Events of the CRM: fans, conversations, messages.")
ONLYFANS = context_stream("onlyfans")
AI = context_stream("ai")
