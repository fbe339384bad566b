"""The streams of the campaigns service: its own context's, and the CRM's, which it consumes.

The service owns `CAMPAIGNS` (created or updated at its start): its events and the mass-message
command the OnlyFans worker runs. `CRM` belongs to the CRM: the service only makes sure it
exists, so its consumer can start before the CRM ever has.
"""

from __future__ import annotations

from huntaze_kit.streams import context_stream

CAMPAIGNS = context_stream(
    "campaigns", "Events of campaigns, and their mass-message commands to the platform workers."
)
CRM = context_stream("crm")
