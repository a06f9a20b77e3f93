"""``python -m agent``: run the agent of one ComfyUI host until SIGTERM or Ctrl-C.

The bus and the registry come from the studio's settings (``STUDIO_AMQP_URL``,
``STUDIO_REDIS_URL``, or a ``--config`` TOML file): a separate process needs the real
servers, since the in-process ones cannot be shared between processes.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from backend.assets.blobs import LocalBlobStore
from backend.assets.stores import open_blob_store
from backend.config import Settings
from backend.errors import StudioError

from .agent import Agent
from .config import AgentConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agent", description="The agent of one ComfyUI host.")
    p.add_argument("--comfy-url", required=True, help="ComfyUI base URL, e.g. http://127.0.0.1:8188")
    p.add_argument("--node-id", required=True, help="this node's id in the studio (one word)")
    p.add_argument("--config", help="studio TOML config file (bus, registry, data dir)")
    p.add_argument("--assets-dir", type=Path, help="asset store directory (default: the studio's data_dir/assets)")
    p.add_argument("--state-dir", type=Path, help="job journal directory (default: the studio's data_dir/agent-state)")
    p.add_argument("--depth", type=int, default=1, help="the most prompts queued behind the running one (default 1); the dispatcher "
                   "uses as many as the measured refill time asks for (backend/jobs/sizing.py)")
    p.add_argument("--label", help="operator-facing node name (default: host name)")
    p.add_argument("--silence-timeout", type=float, default=10.0, help="seconds without events before reconciling")
    p.add_argument("--no-previews", action="store_true", help="do not store or forward sampler previews")
    p.add_argument("--heartbeat-interval", type=float, default=2.0, help="seconds between state publications (default 2)")
    p.add_argument("--state-ttl", type=float, default=6.0, help="seconds the registry keeps the state after a heartbeat (default 6)")
    p.add_argument("--poll-interval", type=float, default=1.0, help="seconds between watchdog ticks (default 1)")
    p.add_argument("--progress-interval", type=float, default=0.1,
                   help="shortest spacing of two progress events of one job; 0 sends every sampler step (default 0.1)")
    p.add_argument("--bus-prefix", help="RabbitMQ name prefix; must match the studio's (default: the bus_prefix setting)")
    p.add_argument("--registry-prefix", help="Redis key prefix; must match the studio's (default: the registry_prefix setting)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)  # its INFO lines are per-socket chatter
    try:
        settings = Settings.load(config_file=args.config)
        if not settings.amqp_url or not settings.redis_url:
            print(
                "agent: set STUDIO_AMQP_URL and STUDIO_REDIS_URL (or amqp_url/redis_url in --config); "
                "a separate agent process cannot use the in-process bus and registry.",
                file=sys.stderr,
            )
            return 2
        extra = {"label": args.label} if args.label else {}
        config = AgentConfig(
            node_id=args.node_id,
            comfy_url=args.comfy_url,
            assets_dir=args.assets_dir or settings.assets_dir,
            state_dir=args.state_dir or settings.data_dir / "agent-state",
            depth=args.depth,
            silence_timeout=args.silence_timeout,
            heartbeat_interval=args.heartbeat_interval,
            state_ttl=args.state_ttl,
            poll_interval=args.poll_interval,
            progress_interval=args.progress_interval,
            previews=not args.no_previews,
            **extra,
        )
        # Imported here: only a standalone agent needs pika and redis.
        from backend.ports.rabbitmq import RabbitBus
        from backend.ports.redis_registry import RedisRegistry

        bus = RabbitBus(settings.amqp_url, prefix=args.bus_prefix or settings.bus_prefix)
        registry = RedisRegistry(settings.redis_url, prefix=args.registry_prefix or settings.registry_prefix)
        # The S3 store needs no shared directory: the agent gets a credential of its own
        # (docs/deploy.md) and presigned URLs for the inputs in each job.
        blobs = open_blob_store(settings) if settings.asset_store == "s3" else LocalBlobStore(config.assets_dir)
        agent = Agent(config, bus=bus, registry=registry, blobs=blobs)
    except (StudioError, ValueError) as exc:  # ValueError: a registry prefix it refuses
        print(f"agent: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent.start()
    stop.wait()
    agent.stop()
    bus.close()
    registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
