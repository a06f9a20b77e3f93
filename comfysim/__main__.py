"""``python -m comfysim``: serve one or many simulated ComfyUI nodes until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from .config import DEMO_MODELS, SimConfig, load_config
from .errors import SimError
from .runtime import start_sims


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m comfysim", description="ComfyUI-compatible simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8188, help="port of the single node (0 = any free port)")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes served by this process")
    p.add_argument("--base-port", type=int, help="first port when --nodes > 1 (node i gets base+i)")
    p.add_argument("--config", help="TOML file with SimConfig fields (see docs/comfysim.md)")
    p.add_argument("--demo-models", action="store_true", help="pretend to have the DEMO_MODELS files")
    p.add_argument("--step-seconds", type=float, help="seconds per sampler step")
    p.add_argument("--startup-delay", type=float, help="seconds before the port accepts connections")
    p.add_argument("--vram-gb", type=float, help="simulated VRAM in GiB")
    p.add_argument("--previews", action="store_true", help="send sampler preview frames")
    p.add_argument("--max-upload-size", type=float, help="request body cap in MB, like ComfyUI")
    p.add_argument("--seed", type=int, help="seed that changes every simulated picture")
    p.add_argument("--data-dir", help="folder for input/, output/, temp/ (default: a temp dir)")
    p.add_argument("--fault-raise-in-node", metavar="NODE", help="node id or class_type that raises")
    p.add_argument("--fault-hang-in-node", metavar="NODE", help="node id or class_type that hangs")
    p.add_argument("--fault-exit-at-step", type=int, metavar="N", help="os._exit(3) at progress step N")
    p.add_argument("--fault-ws-silent", action="store_true", help="send nothing on websockets")
    p.add_argument("--fault-upload-delay", type=float, metavar="S", help="delay uploads by S seconds")
    p.add_argument("--fault-refuse-uploads", action="store_true", help="answer uploads with HTTP 500")
    p.add_argument("--fault-http-delay", type=float, metavar="S", help="delay every request by S seconds")
    p.add_argument("--log-level", default="INFO")
    return p


def build_config(args: argparse.Namespace) -> SimConfig:
    config = load_config(args.config) if args.config else SimConfig()
    changes: dict[str, Any] = {}
    if args.demo_models:
        changes["models"] = {**{k: list(v) for k, v in DEMO_MODELS.items()}, **config.models}
    for flag, field in (("step_seconds", "step_seconds"), ("startup_delay", "startup_delay"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    if args.vram_gb is not None:
        changes["vram_total_bytes"] = int(args.vram_gb * 1024**3)
    if args.previews:
        changes["previews"] = True
    if args.max_upload_size is not None:
        changes["max_upload_size"] = int(args.max_upload_size * 1024 * 1024)
    if args.data_dir:
        changes["data_dir"] = args.data_dir
    faults: dict[str, Any] = {}
    for name in ("raise_in_node", "hang_in_node", "exit_at_step", "upload_delay", "http_delay"):
        value = getattr(args, f"fault_{name}")
        if value is not None:
            faults[name] = value
    for name in ("ws_silent", "refuse_uploads"):
        if getattr(args, f"fault_{name}"):
            faults[name] = True
    if faults:
        changes["faults"] = config.faults.merged(faults)
    return config.replace(**changes) if changes else config


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(args)
        base_port = args.base_port if args.base_port is not None else args.port
        cluster = start_sims(args.nodes, config, host=args.host, base_port=base_port, wait=False)
    except SimError as exc:
        print(f"comfysim: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for url in cluster.urls:
        print(f"comfysim serving {url}", flush=True)
    stop.wait()
    cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
