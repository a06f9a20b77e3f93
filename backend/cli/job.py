"""``job submit|show|cancel``: run a workflow from the command line and follow it."""

from __future__ import annotations

import argparse
import json
import queue
import uuid
from typing import Any

from .. import accounts, assets, jobs
from ..errors import InvalidParameter, StudioError
from ..jobs import queries
from ..jobs.state import TERMINAL, JobState
from ..jobs.submit import Accepted, NeedsConfirmation, Rejected, cancel, submit
from ..runtime import Backend, build_backend
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("job", help="submit, inspect and cancel jobs").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = group.add_parser("submit", help="submit a job for a user")
    p.add_argument("user")
    p.add_argument("workflow")
    p.add_argument("values", nargs="*", metavar="KEY=VALUE", help="parameter or preset values")
    p.add_argument("--image", action="append", default=[], metavar="param=PATH", help="upload a file for a parameter")
    p.add_argument("--expert", action="store_true", help="allow expert parameters")
    p.add_argument("--queue-if-busy", action="store_true", help="queue even when every node is busy")
    p.add_argument("--wait", action="store_true", help="print events until the job ends")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait with --wait")
    p.set_defaults(handler=submit_job)

    show = group.add_parser("show", help="a job's state, cost, error and outputs")
    show.add_argument("job_id")
    show.set_defaults(handler=show_job)

    stop = group.add_parser("cancel", help="cancel a job and refund it")
    stop.add_argument("job_id")
    stop.set_defaults(handler=cancel_job)


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidParameter(f"Expected key=value, got {pair!r}.", param=pair)
        values[key.strip()] = value
    return values


def _distributed(ctx: Context) -> Backend:
    backend = build_backend(ctx.settings, upgrade_schema=False)
    if not backend.distributed:
        backend.close()
        raise StudioError(
            "Jobs run on nodes reached through the shared registry and bus: set STUDIO_REDIS_URL and "
            "STUDIO_AMQP_URL (and run `python -m backend worker` and agents), or use the studio in embedded mode."
        )
    return backend


def submit_job(ctx: Context, args: argparse.Namespace) -> int:
    backend = _distributed(ctx)
    try:
        user = accounts.user_named(backend.db, args.user)
        params: dict[str, Any] = parse_pairs(args.values)
        for param, path in parse_pairs(args.image).items():
            with open(path, "rb") as fh:
                record = assets.store_upload(
                    backend.db, backend.blobs, user.id, iter(lambda: fh.read(1 << 20), b""), name=path,
                    max_bytes=ctx.settings.max_upload_bytes, max_pixels=ctx.settings.max_image_pixels,
                )
            params[param] = record.id
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        subscription = backend.bus.subscribe_user_events(events.put) if args.wait else None
        try:
            result = submit(
                backend, user.id, args.workflow, params, idempotency_key=uuid.uuid4().hex,
                expert=args.expert, queue_if_busy=args.queue_if_busy,
            )
            if isinstance(result, Rejected):
                raise result.error
            if isinstance(result, NeedsConfirmation):
                ctx.emit({"outcome": "needs_confirmation", "wait_seconds": result.wait_seconds, **result.message},
                         result.message["en"] + " (add --queue-if-busy)")
                return 3
            assert isinstance(result, Accepted)
            job = result.job
            ctx.emit({"outcome": "accepted", "job_id": job.id, "cost": job.cost}, f"job {job.id} queued, cost {job.cost}")
            if args.wait:
                _follow(ctx, events, job.id, args.timeout)
        finally:
            if subscription is not None:
                subscription.close()
        if args.wait:
            return _print_job(ctx, backend, job.id)
        return 0
    finally:
        backend.close()


def _follow(ctx: Context, events: queue.Queue[dict[str, Any]], job_id: str, timeout: float) -> None:
    while True:
        try:
            event = events.get(timeout=timeout)
        except queue.Empty:
            raise StudioError(f"No event for job {job_id} in {timeout:.0f} s; see `job show {job_id}`.") from None
        if event.get("job_id") != job_id:
            continue
        if ctx.as_json:
            print(json.dumps(event, ensure_ascii=False))
        else:
            print(_describe(event))
        if event["type"] in TERMINAL:
            return


def _describe(event: dict[str, Any]) -> str:
    kind = event["type"]
    if kind == "stage":
        return f"  stage     {event.get('alias', {}).get('en') or event.get('graph_node')}"
    if kind == "progress":
        return f"  progress  {event.get('value')}/{event.get('max')}  ({100 * float(event.get('fraction', 0)):.0f}%)"
    if kind == "output":
        return f"  output    {event.get('asset_id')}"
    if kind == "failed":
        return f"  failed    {event.get('reason', {}).get('en')} (refunded {event.get('refunded', 0)})"
    return f"  {kind}"


def _print_job(ctx: Context, backend: Backend, job_id: str) -> int:
    card = queries.job_card(backend.db, job_id)
    job = card.job
    paths = [backend.blobs.location(o.asset_id) for o in card.outputs]
    data = {
        "job_id": job.id, "state": job.state, "workflow": job.workflow, "cost": job.cost, "node_id": job.node_id,
        "attempts": job.attempts, "error_type": job.error_type, "error": job.error_message, "stage": job.error_stage,
        "params": job.params, "outputs": paths,
    }
    lines = [f"job {job.id}: {job.state} ({job.workflow}, {job.cost} credits, node {job.node_id or '-'})"]
    if job.error_type:
        lines.append(f"  error: {job.error_type}: {job.error_message} (stage {job.error_stage or '-'})")
    lines += [f"  output: {path}" for path in paths]
    ctx.emit(data, "\n".join(lines))
    return 0 if job.state != JobState.FAILED else 1


def show_job(ctx: Context, args: argparse.Namespace) -> int:
    backend = build_backend(ctx.settings, upgrade_schema=False)
    try:
        return _print_job(ctx, backend, args.job_id)
    finally:
        backend.close()


def cancel_job(ctx: Context, args: argparse.Namespace) -> int:
    backend = build_backend(ctx.settings, upgrade_schema=False)
    try:
        job = jobs.get(backend.db, args.job_id)
        moved = cancel(backend, job.id, user_id=None)
        ctx.emit({"job_id": job.id, "cancelled": moved}, f"job {job.id} cancelled and refunded" if moved else "already ended")
        return 0
    finally:
        backend.close()
