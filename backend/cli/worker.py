"""``worker`` and ``nodes``: the backend loops without the UI, and the live node list."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from ..runtime import build_backend
from backend.jobs.worker import Worker
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser("worker", help="run the dispatcher, lifecycle consumer and sweeper until interrupted")
    worker.set_defaults(handler=run_worker)
    nodes = sub.add_parser("nodes", help="list live nodes with their state and reservations")
    nodes.set_defaults(handler=list_nodes)


def run_worker(ctx: Context, args: argparse.Namespace) -> int:
    backend = build_backend(ctx.settings)
    if not backend.distributed:
        print(
            "note: no STUDIO_REDIS_URL/STUDIO_AMQP_URL set; this worker uses in-process ports, so only agents "
            "inside this process could reach it. Set both to join a distributed deployment."
        )
    worker = Worker(backend).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("worker running; Ctrl-C to stop")
    stop.wait()
    worker.stop()
    backend.close()
    return 0


def list_nodes(ctx: Context, args: argparse.Namespace) -> int:
    backend = build_backend(ctx.settings, upgrade_schema=False)
    try:
        views = backend.registry.nodes()
        rows: list[dict[str, Any]] = [
            {
                "node_id": v.state.node_id,
                "online": v.state.online,
                "simulated": v.state.simulated,
                "label": v.state.label,
                "slots": v.state.slots,
                "reserved": sorted(v.reservations),
                "queue_remaining": v.state.queue_remaining,
                "vram_total_mb": v.state.vram_total_mb,
                "vram_free_mb": v.state.vram_free_mb,
                "speed": v.state.speed,
                "loaded_checkpoint": v.state.loaded_checkpoint,
            }
            for v in views
        ]
    finally:
        backend.close()
    lines = [f"{'node':<16} {'state':<8} {'slots':>5} {'queue':>5}  {'vram MiB':>14}  checkpoint"]
    for r in rows:
        state = ("online" if r["online"] else "offline") + ("*" if r["simulated"] else "")
        lines.append(
            f"{r['node_id']:<16} {state:<8} {len(r['reserved'])}/{r['slots']:<3} {r['queue_remaining']:>5}  "
            f"{r['vram_free_mb']:>6.0f}/{r['vram_total_mb']:<7.0f}  {r['loaded_checkpoint'] or '-'}"
        )
    if not rows:
        lines = ["no live nodes" + ("" if backend.distributed else " (in-process registry: run this inside the studio, or set STUDIO_REDIS_URL)")]
    elif any(r["simulated"] for r in rows):
        lines.append("* simulated node")
    ctx.emit(rows, "\n".join(lines))
    return 0
