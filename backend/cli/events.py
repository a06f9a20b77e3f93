"""``events dead-letters|replay|discard``: the agent events the studio set aside.

The lifecycle consumer sets an event aside (a dead letter) when applying it fails for the
event's own reasons — it names an output file the asset store does not have, a size that
does not match — instead of dropping it. Once the cause is fixed, ``replay`` puts such
events back on their queue, where the studio applies them like any other (applying an
event twice changes nothing).
"""

from __future__ import annotations

import argparse
import datetime as dt

from ..errors import StudioError
from ..ports.bus import DeadLetter
from ..runtime import build_bus
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("events", help="dead-lettered agent events: list, replay, discard").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    listing = group.add_parser("dead-letters", help="list the events set aside, oldest first")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.set_defaults(handler=list_dead_letters)
    replay = group.add_parser("replay", help="put dead letters back on their queue to be applied again")
    replay.add_argument("ids", nargs="*", metavar="ID", help="the dead letters to replay (ids from dead-letters)")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    replay.set_defaults(handler=replay_dead_letters)
    discard = group.add_parser("discard", help="delete dead letters for good")
    discard.add_argument("ids", nargs="+", metavar="ID")
    discard.set_defaults(handler=discard_dead_letters)


def _bus(ctx: Context):  # type: ignore[no-untyped-def]
    if not ctx.settings.amqp_url:
        raise StudioError(
            "The studio runs with its in-process bus (no STUDIO_AMQP_URL), whose dead letters live in the studio "
            "process: see them on the Admin page, under Dead letters."
        )
    return build_bus(ctx.settings)


def describe(letter: DeadLetter) -> dict[str, object]:
    """One dead letter for people and ``--json``: what it is about and why it was set aside."""
    body = letter.body
    return {
        "id": letter.id,
        "queue": letter.queue,
        "failed_at": dt.datetime.fromtimestamp(letter.failed_at, dt.timezone.utc).isoformat(timespec="seconds"),
        "job_id": body.get("job_id"),
        "type": body.get("type"),
        "node_id": body.get("node_id"),
        "reason": letter.reason,
        "body": body,
    }


def list_dead_letters(ctx: Context, args: argparse.Namespace) -> int:
    bus = _bus(ctx)
    try:
        letters = [describe(d) for d in bus.dead_letters(limit=max(0, args.limit))]
    finally:
        bus.close()
    lines = [f"{d['id']}  {d['failed_at']}  {d['queue']}  job {d['job_id']} {d['type'] or ''}\n    {d['reason']}"
             for d in letters]
    ctx.emit(letters, "\n".join(lines) if lines else "no dead letters")
    return 0


def replay_dead_letters(ctx: Context, args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        raise StudioError("Name the dead letters to replay (ids from `events dead-letters`), or pass --all.")
    bus = _bus(ctx)
    try:
        replayed = bus.replay_dead_letters(None if args.all else args.ids)
    finally:
        bus.close()
    missing = sorted(set(args.ids) - set(replayed))
    ctx.emit({"replayed": replayed, "not_found": missing},
             f"replayed {len(replayed)} dead letter(s)" + (f"; not found: {', '.join(missing)}" if missing else ""))
    return 1 if missing else 0


def discard_dead_letters(ctx: Context, args: argparse.Namespace) -> int:
    bus = _bus(ctx)
    try:
        discarded = bus.discard_dead_letters(args.ids)
    finally:
        bus.close()
    missing = sorted(set(args.ids) - set(discarded))
    ctx.emit({"discarded": discarded, "not_found": missing},
             f"discarded {len(discarded)} dead letter(s)" + (f"; not found: {', '.join(missing)}" if missing else ""))
    return 1 if missing else 0
