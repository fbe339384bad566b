"""The streams of the campaigns service: its own context's, and the CRM's and the OnlyFans
worker's, which it consumes.

The service owns `CAMPAIGNS` (created or updated at its start): its events and the mass-message
command the OnlyFans worker runs. `CRM` and `ONLYFANS` belong to their services: this one only
makes sure they exist, so its consumers can start before those services ever have.
"""

from __future__ import annotations

from huntaze_kit.streams import context_stream

CAMPAIGNS = context_stream(
    "campaigns", "Events of campaigns, and their mass-message commands to the platform workers."
)
CRM = context_stream("crm")
ONLYFANS = context_stream("onlyfans")
