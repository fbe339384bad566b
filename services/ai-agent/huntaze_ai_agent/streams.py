"""The streams of the AI agent: its own context's, and the CRM's, which it consumes.

The agent owns `AI` (created or updated at its start). `CRM` belongs to the CRM: the agent only
makes sure it exists, so its consumer can start before the CRM ever has.
"""

from __future__ import annotations

from huntaze_kit.streams import context_stream

AI = context_stream("ai", "Events of the AI agent: suggestions, their outcomes, hand-offs.")
CRM = context_stream("crm")
