#!/usr/bin/env python3
"""Start AIGC Studio: ``python run_studio.py [--host H] [--port P] [--share]``.

With no configuration this is the embedded mode: SQLite and assets under ``./data``,
the in-process bus and registry, and — when no ComfyUI is configured or reachable — a
built-in simulated ComfyUI node (labelled "simulated" in the UI) with its agent as a
thread, so the whole flow works on a machine without a GPU. ``STUDIO_COMFYUI_URLS``
points it at real ComfyUI hosts; ``STUDIO_REDIS_URL`` + ``STUDIO_AMQP_URL`` (+
``STUDIO_DATABASE_URL``) join a distributed deployment, where agents run as their own
processes (``python -m agent``).

This file is the composition root: the only place where the studio, the backend, the
agents and the simulator meet.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

# Before anything imports gradio or huggingface_hub: no calls to the outside world.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("run_studio")


@dataclass
class LocalNodes:
    """Agents (and simulators) started inside this process; stopped in reverse order."""

    stoppers: list[Callable[[], None]] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    simulated: bool = False

    def stop(self) -> None:
        for stop in reversed(self.stoppers):
            try:
                stop()
            except Exception:
                log.exception("while stopping a local node")
        self.stoppers.clear()


def reachable(url: str, timeout: float = 2.0) -> bool:
    import requests

    try:
        return requests.get(url.rstrip("/") + "/system_stats", timeout=timeout).ok
    except requests.RequestException:
        return False


def start_local_nodes(backend, *, simulated_nodes: int = 1, agent_overrides: dict | None = None,  # type: ignore[no-untyped-def]
                      sim_port: int = 0) -> LocalNodes:
    """Agents as threads for the configured ComfyUI URLs, or simulated nodes if none answer.

    Simulated node *i* listens on ``sim_port + i`` (``sim_port`` 0: free ports); tests
    use the fixed address to switch faults on (``POST /sim/faults``).

    In a distributed deployment agents are separate processes on the GPU hosts, so only
    the simulator fallback starts here (and only when asked for with ``simulated_nodes``).
    """
    from agent.agent import Agent
    from agent.config import AgentConfig

    settings = backend.settings
    nodes = LocalNodes()
    overrides = agent_overrides or {}

    def add_agent(node_id: str, url: str, label: str) -> None:
        config = AgentConfig(node_id=node_id, comfy_url=url, assets_dir=settings.assets_dir, label=label, **overrides)
        agent = Agent(config, bus=backend.bus, registry=backend.registry, blobs=backend.blobs)
        agent.start()
        nodes.stoppers.append(agent.stop)
        nodes.node_ids.append(node_id)

    urls = list(settings.comfyui_urls)
    live = [u for u in urls if reachable(u)]
    for url in set(urls) - set(live):
        log.warning("ComfyUI at %s does not answer; it joins when it comes up", url)
    if urls and not backend.distributed:
        for i, url in enumerate(urls, 1):
            add_agent(f"node-{i}", url, label=f"ComfyUI {i}")
    if live or simulated_nodes <= 0 or (backend.distributed and urls):
        return nodes

    from comfysim import DEMO_MODELS, SimConfig, start_sims

    cluster = start_sims(simulated_nodes, SimConfig(models=DEMO_MODELS, step_seconds=0.05, previews=True),
                         host="127.0.0.1", base_port=sim_port)
    nodes.stoppers.append(cluster.stop)
    nodes.simulated = True
    for i, url in enumerate(cluster.urls, 1):
        add_agent(f"sim-{i}", url, label=f"simulated {i}")
    log.info("no ComfyUI reachable: started %d simulated node(s)", simulated_nodes)
    return nodes


def ensure_admin(backend) -> tuple[str, str] | None:  # type: ignore[no-untyped-def]
    """On first start, create an admin; returns (name, password) to print once."""
    from backend import accounts

    if accounts.list_users(backend.db):
        return None
    name = os.environ.get("STUDIO_ADMIN_NAME", "admin")
    password = os.environ.get("STUDIO_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    accounts.create_user(backend.db, name, password, role="admin", welcome_credits=1000)
    return name, password


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run_studio.py", description="Start AIGC Studio.")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (needs internet)")
    p.add_argument("--config", help="TOML settings file (default: $STUDIO_CONFIG)")
    p.add_argument("--simulated-nodes", type=int, default=1, help="simulated nodes when no ComfyUI answers (0: none)")
    p.add_argument("--sim-port", type=int, default=0, metavar="BASE",
                   help="simulated nodes listen on BASE, BASE+1, ... on 127.0.0.1 (default 0: free ports)")
    p.add_argument("--log-level", default=os.environ.get("STUDIO_LOG_LEVEL", "WARNING"),
                   help="WARNING (default: problems only), INFO (every job), DEBUG")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pika", "httpx", "urllib3", "websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import uvicorn

    from backend.config import Settings
    from backend.errors import StudioError
    from backend.images import return_pixel_memory_to_the_system
    from backend.runtime import build_backend
    from backend.jobs.worker import Worker

    return_pixel_memory_to_the_system()  # before anything decodes a picture

    try:
        settings = Settings.load(config_file=args.config)
        backend = build_backend(settings)
        admin = ensure_admin(backend)  # a weak STUDIO_ADMIN_PASSWORD is refused here
    except StudioError as exc:
        print(f"run_studio: {exc}", file=sys.stderr)
        return 2

    # Gradio's uploads and cache go under the data directory (read when gradio is imported
    # and its blocks are built), where the studio sweeps them; never a shared /tmp/gradio.
    os.environ.setdefault("GRADIO_TEMP_DIR", str((settings.data_dir / "gradio").resolve()))
    from studio.app import create_app

    # Mounted multi-page apps never use SSR; Gradio says so on every start.
    warnings.filterwarnings("ignore", message="SSR mode is not supported", category=UserWarning)

    worker = Worker(backend).start()
    nodes = start_local_nodes(backend, simulated_nodes=args.simulated_nodes, sim_port=args.sim_port)
    app = create_app(backend, wake=worker.wake)

    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/"
    # proxy_headers=False: uvicorn would otherwise believe X-Forwarded-* from 127.0.0.1;
    # the app trusts exactly ``trusted_proxies`` (studio.app.create_app).
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           proxy_headers=False))

    def banner() -> None:
        """Printed once the server listens, so the URL it gives already answers."""
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        print(f"\n  AIGC Studio is running at {url}")
        if admin:
            print(f"  First start: administrator '{admin[0]}' with password '{admin[1]}' (shown once; change it).")
        if nodes.simulated:
            print("  No ComfyUI configured or reachable: using a simulated node (set STUDIO_COMFYUI_URLS for real ones).")
        if args.share:
            share_link(args.host, args.port)
        print(flush=True)

    threading.Thread(target=banner, name="banner", daemon=True).start()
    # uvicorn handles SIGINT and SIGTERM itself and returns from run(); then we clean up.
    try:
        server.run()
    finally:
        nodes.stop()
        worker.stop()
        backend.close()
    return 0


def share_link(host: str, port: int) -> None:
    """Gradio's share tunnel; it downloads a helper binary, so it needs internet access."""
    try:
        from gradio import networking

        public = networking.setup_tunnel(host if host not in ("0.0.0.0", "::") else "127.0.0.1", port, secrets.token_urlsafe(32), None, None)
        print(f"  Public share link: {public}")
    except Exception as exc:  # noqa: BLE001 - the studio runs fine without it
        print(f"  --share failed ({exc}); the studio is still available locally.")


if __name__ == "__main__":
    sys.exit(main())
