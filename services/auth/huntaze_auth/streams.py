"""The stream of the auth context, which this service owns (created or updated at its start)."""

from __future__ import annotations

from huntaze_kit.streams import context_stream

AUTH = context_stream("auth", "Events of the auth context: users, sessions, email.")
