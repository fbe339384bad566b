"""Dead letters: list, replay and purge the messages consumers gave up on.

A consumer whose handler failed on a message `max_deliver` times (or once, with a permanent
error) copies the message to `dlq.<consumer>` in the `DLQ` stream, keeping its headers and adding
why (`Huntaze-Dlq-Error`), who (`Huntaze-Dlq-Consumer`), after how many attempts
(`Huntaze-Dlq-Deliveries`) and where from (`Huntaze-Original-Subject`). Outages never lead here.

Replaying publishes the message again on its original subject with its original
`Huntaze-Event-Id` and a fresh `Nats-Msg-Id` (`<event id>.replay.<dlq sequence>`): every
consumer of that subject receives it, those that applied it already skip it (by their
`processed_events`), and the one that failed tries again. A replayed dead letter is removed
from the DLQ unless kept.

The other side of the flow has its own stuck messages: outbox rows the relay cannot publish
(each failure counted in `attempts`, the last one in `last_error`). They hold back the later
events of their aggregate, so an operator lists them, and retries them (due at once, unparked)
or parks them (no more attempts; the aggregate still waits, its order intact):

    python -m huntaze_kit.dlq list [--consumer NAME] [--limit N] [--json] [--nats-url URL]
    python -m huntaze_kit.dlq replay SEQ [SEQ ...] [--keep] [--nats-url URL]
    python -m huntaze_kit.dlq purge [--consumer NAME] [--nats-url URL]
    python -m huntaze_kit.dlq outbox list --schema S [--min-attempts N] [--json]
    python -m huntaze_kit.dlq outbox park --schema S EVENT_ID [EVENT_ID ...]
    python -m huntaze_kit.dlq outbox retry --schema S EVENT_ID [EVENT_ID ...]
    (each with [--database-url URL], default HUNTAZE_DATABASE_URL)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from nats.js import JetStreamContext
from nats.js.api import PubAck, RawStreamMsg
from nats.js.errors import NotFoundError

from huntaze_kit.config import CommonSettings
from huntaze_kit.db import libpq_url
from huntaze_kit.outbox import StuckRow, park_rows, retry_rows, stuck_rows
from huntaze_kit.streams import (
    DLQ_STREAM,
    DLQ_SUBJECT_PREFIX,
    Headers,
    connect_nats,
    dlq_subject,
)

_DLQ_ONLY_HEADERS = frozenset(
    {
        Headers.DLQ_ERROR,
        Headers.DLQ_CONSUMER,
        Headers.DLQ_DELIVERIES,
        Headers.DLQ_AT,
        Headers.ORIGINAL_SUBJECT,
        Headers.ORIGINAL_STREAM,
        Headers.ORIGINAL_SEQUENCE,
    }
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message in the DLQ stream."""

    seq: int
    subject: str
    consumer: str | None
    original_subject: str | None
    original_stream: str | None
    original_sequence: int | None
    event_id: str | None
    message_type: str | None
    error: str | None
    deliveries: int | None
    dead_lettered_at: datetime | None
    headers: dict[str, str]
    payload: bytes

    @classmethod
    def from_raw(cls, raw: RawStreamMsg) -> DeadLetter:
        headers = {str(name): str(value) for name, value in (raw.headers or {}).items()}
        return cls(
            seq=int(raw.seq or 0),
            subject=str(raw.subject or ""),
            consumer=headers.get(Headers.DLQ_CONSUMER),
            original_subject=headers.get(Headers.ORIGINAL_SUBJECT),
            original_stream=headers.get(Headers.ORIGINAL_STREAM),
            original_sequence=_int_or_none(headers.get(Headers.ORIGINAL_SEQUENCE)),
            event_id=headers.get(Headers.EVENT_ID),
            message_type=headers.get(Headers.EVENT_TYPE),
            error=headers.get(Headers.DLQ_ERROR),
            deliveries=_int_or_none(headers.get(Headers.DLQ_DELIVERIES)),
            dead_lettered_at=_time_or_none(headers.get(Headers.DLQ_AT)),
            headers=headers,
            payload=bytes(raw.data or b""),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "consumer": self.consumer,
            "original_subject": self.original_subject,
            "original_stream": self.original_stream,
            "original_sequence": self.original_sequence,
            "event_id": self.event_id,
            "message_type": self.message_type,
            "error": self.error,
            "deliveries": self.deliveries,
            "dead_lettered_at": (
                self.dead_lettered_at.isoformat() if self.dead_lettered_at else None
            ),
            "payload_bytes": len(self.payload),
        }


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _time_or_none(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _filter(consumer: str | None) -> str:
    return dlq_subject(consumer) if consumer else f"{DLQ_SUBJECT_PREFIX}.>"


async def list_dead_letters(
    js: JetStreamContext, consumer: str | None = None, limit: int = 100, *, after_seq: int = 0
) -> list[DeadLetter]:
    """Up to `limit` dead letters (of one consumer, or all), oldest first, after `after_seq`."""
    subject = _filter(consumer)
    found: list[DeadLetter] = []
    seq = after_seq + 1
    while len(found) < limit:
        try:
            raw = await js.get_msg(DLQ_STREAM, seq=seq, next=True, subject=subject)
        except NotFoundError:
            break
        letter = DeadLetter.from_raw(raw)
        found.append(letter)
        seq = letter.seq + 1
    return found


async def get_dead_letter(js: JetStreamContext, seq: int) -> DeadLetter:
    """The dead letter at sequence `seq`; NotFoundError when there is none."""
    return DeadLetter.from_raw(await js.get_msg(DLQ_STREAM, seq=seq))


def replay_headers(letter: DeadLetter) -> dict[str, str]:
    """The headers a replay carries: the original ones and a fresh `Nats-Msg-Id`."""
    headers = {
        name: value
        for name, value in letter.headers.items()
        if name not in _DLQ_ONLY_HEADERS and not name.startswith("Nats-")
    }
    origin = letter.event_id or "unidentified"
    headers[Headers.MSG_ID] = f"{origin}.replay.{letter.seq}"
    return headers


async def replay(js: JetStreamContext, seq: int, *, keep: bool = False) -> PubAck:
    """Publishes dead letter `seq` again on its original subject; removes it unless `keep`."""
    letter = await get_dead_letter(js, seq)
    if not letter.original_subject:
        raise ValueError(f"dead letter {seq} has no {Headers.ORIGINAL_SUBJECT} header")
    ack = await js.publish(letter.original_subject, letter.payload, headers=replay_headers(letter))
    if not keep:
        await js.delete_msg(DLQ_STREAM, seq)
    return ack


async def purge(js: JetStreamContext, consumer: str | None = None) -> int:
    """Deletes every dead letter (of one consumer, or all); returns how many there were."""
    subject = _filter(consumer)
    info = await js.stream_info(DLQ_STREAM, subjects_filter=subject)
    counts = info.state.subjects or {}
    count = sum(counts.values()) if counts else 0
    await js.purge_stream(DLQ_STREAM, subject=subject if consumer else None)
    return count


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--nats-url",
        default=None,
        help="NATS URL (default: HUNTAZE_NATS_URL, else nats://127.0.0.1:4222)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m huntaze_kit.dlq", description="Inspect and replay dead letters."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", parents=[common], help="list dead letters")
    listing.add_argument("--consumer", help="only this consumer's (e.g. auth-email-sender)")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--after", type=int, default=0, help="start after this sequence")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    replaying = commands.add_parser("replay", parents=[common], help="replay dead letters")
    replaying.add_argument("seqs", metavar="SEQ", type=int, nargs="+")
    replaying.add_argument("--keep", action="store_true", help="keep them in the DLQ")
    purging = commands.add_parser("purge", parents=[common], help="delete dead letters")
    purging.add_argument("--consumer", help="only this consumer's")

    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (default: HUNTAZE_DATABASE_URL)",
    )
    database.add_argument("--schema", required=True, help="the service's schema (e.g. auth)")
    outbox = commands.add_parser("outbox", help="outbox rows that cannot be published")
    actions = outbox.add_subparsers(dest="action", required=True)
    stuck = actions.add_parser("list", parents=[database], help="list failing and parked rows")
    stuck.add_argument("--min-attempts", type=int, default=1)
    stuck.add_argument("--limit", type=int, default=100)
    stuck.add_argument("--json", action="store_true", help="one JSON object per line")
    for name, text in (
        ("park", "stop publishing these rows (their aggregates keep waiting)"),
        ("retry", "publish these rows again now (unparks them)"),
    ):
        action = actions.add_parser(name, parents=[database], help=text)
        action.add_argument("ids", metavar="EVENT_ID", type=uuid.UUID, nargs="+")
    return parser


def _print_letters(letters: Sequence[DeadLetter], *, as_json: bool) -> None:
    if as_json:
        for letter in letters:
            sys.stdout.write(orjson.dumps(letter.as_dict()).decode() + "\n")
        return
    if not letters:
        sys.stdout.write("no dead letters\n")
        return
    for letter in letters:
        when = (
            letter.dead_lettered_at.isoformat(timespec="seconds")
            if letter.dead_lettered_at
            else "?"
        )
        sys.stdout.write(
            f"{letter.seq:>8}  {when}  {letter.consumer or '?'}  "
            f"{letter.original_subject or '?'}  event={letter.event_id or '?'}  "
            f"deliveries={letter.deliveries if letter.deliveries is not None else '?'}\n"
            f"          {letter.error or ''}\n"
        )


def _print_stuck(rows: Sequence[StuckRow], *, as_json: bool) -> None:
    if as_json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row.as_dict()).decode() + "\n")
        return
    if not rows:
        sys.stdout.write("no stuck outbox rows\n")
        return
    for row in rows:
        state = "parked" if row.parked_at else f"next attempt {row.next_attempt_at:%H:%M:%S}"
        sys.stdout.write(
            f"{row.id}  seq={row.seq}  {row.subject}  {row.aggregate_type}:{row.aggregate_id}  "
            f"attempts={row.attempts}  {state}  waiting_behind={row.waiting_behind}\n"
            f"          {row.last_error or ''}\n"
        )


async def _outbox_main(args: argparse.Namespace) -> int:
    url = args.database_url or CommonSettings().database_url
    conn: asyncpg.Connection = await asyncpg.connect(libpq_url(url))
    try:
        if args.action == "list":
            rows = await stuck_rows(
                conn, args.schema, min_attempts=args.min_attempts, limit=args.limit
            )
            _print_stuck(rows, as_json=args.json)
            return 0
        change = park_rows if args.action == "park" else retry_rows
        changed = await change(conn, args.schema, args.ids)
        verb = "parked" if args.action == "park" else "retried"
        sys.stdout.write(f"{verb} {changed} of {len(args.ids)} row(s)\n")
        return 0 if changed == len(args.ids) else 1
    finally:
        await conn.close()


async def _main(args: argparse.Namespace) -> int:
    if args.command == "outbox":
        return await _outbox_main(args)
    url = args.nats_url or CommonSettings().nats_url
    nc = await connect_nats(url, name="huntaze-dlq", initial_connect_deadline=10.0)
    try:
        js = nc.jetstream()
        if args.command == "list":
            letters = await list_dead_letters(js, args.consumer, args.limit, after_seq=args.after)
            _print_letters(letters, as_json=args.json)
        elif args.command == "replay":
            failures = 0
            for seq in args.seqs:
                try:
                    ack = await replay(js, seq, keep=args.keep)
                except (NotFoundError, ValueError) as err:
                    failures += 1
                    sys.stderr.write(f"{seq}: not replayed: {err or type(err).__name__}\n")
                    continue
                note = " (duplicate, already replayed)" if ack.duplicate else ""
                sys.stdout.write(f"{seq}: replayed as {ack.stream}#{ack.seq}{note}\n")
            return 1 if failures else 0
        else:
            count = await purge(js, args.consumer)
            sys.stdout.write(f"purged {count} dead letter(s)\n")
        return 0
    finally:
        await nc.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
