"""GPU hosts for a benchmark, in a process of their own: comfysim nodes with their agents.

In production the agents and ComfyUI run on other machines than the studio; running them
in the benchmark's own process would make the studio's consumer, the agents and the
simulated GPUs share one interpreter lock. The benchmark starts this module as a child
process on the same servers (same bus and registry prefixes, same asset directory):

    python -m bench.hosts --nodes 4 [--first 1] --step-seconds 0.001 --bus-prefix P \\
        --registry-prefix R --assets DIR [--record FILE]

It prints ``ready`` once every agent is started and runs until its stdin closes. With
``--record`` it then writes ``[[prompt_id, step, t], ...]`` to ``FILE``: when comfysim
emitted each ``progress`` event, on ``time.monotonic()`` (one clock for every process on
Linux). Several such processes share the nodes of a large benchmark: ``--first`` numbers
this one's nodes (``sim-<first>`` …).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--first", type=int, default=1, help="the number of this process's first node")
    parser.add_argument("--depth", type=int, default=1, help="the agents' --depth")
    parser.add_argument("--step-seconds", type=float, required=True)
    parser.add_argument("--bus-prefix", required=True)
    parser.add_argument("--registry-prefix", required=True)
    parser.add_argument("--assets", type=Path, required=True)
    parser.add_argument("--record", type=Path)
    args = parser.parse_args(argv)

    from agent.agent import Agent
    from agent.config import AgentConfig
    from backend.assets.blobs import LocalBlobStore
    from backend.ports.rabbitmq import RabbitBus
    from backend.ports.redis_registry import RedisRegistry
    from comfysim import DEMO_MODELS, SimConfig, start_sims
    from comfysim.websocket import SocketHub

    from . import common

    common.quiet_logs()
    emitted: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    inner = SocketHub.send

    def send(self: SocketHub, event: str, data: Any, sid: str | None = None) -> None:
        if event == "progress" and args.record:
            now = time.monotonic()
            with lock:
                emitted.append((str(data["prompt_id"]), int(data["value"]), now))
        inner(self, event, data, sid)

    SocketHub.send = send  # type: ignore[method-assign]
    sims = start_sims(args.nodes, SimConfig(models=DEMO_MODELS, step_seconds=args.step_seconds))
    bus = RabbitBus(common.AMQP_URL, prefix=args.bus_prefix)
    registry = RedisRegistry(common.REDIS_URL, prefix=args.registry_prefix)
    blobs = LocalBlobStore(args.assets, durable=False)
    agents = []
    try:
        for i, url in enumerate(sims.urls, args.first):
            config = AgentConfig(node_id=f"sim-{i}", comfy_url=url, assets_dir=args.assets, label=f"sim {i}",
                                 depth=args.depth, previews=False, **common.AGENT_TIMING)
            agent = Agent(config, bus=bus, registry=registry, blobs=blobs)
            agent.start()
            agents.append(agent)
        print("ready", flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin
    finally:
        for agent in agents:
            agent.stop()
        sims.stop()
        bus.close()
        registry.close()
        if args.record:
            with lock:
                args.record.write_text(json.dumps(emitted))


if __name__ == "__main__":
    main()
