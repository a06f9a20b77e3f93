"""comfysim: a ComfyUI 0.3.64-compatible simulator for tests, benchmarks and the demo node.

It speaks ComfyUI's HTTP and websocket protocol (see docs/comfysim.md and
/work/shared/comfyui-protocol.md), runs model-free image nodes for real with numpy/Pillow and
simulates model nodes (checkpoints, samplers, VAE, LoRA, ControlNet, upscalers, audio) with
step timing, progress, simulated VRAM and deterministic pictures. It imports nothing else of
the project.

Command line::

    python -m comfysim --host 127.0.0.1 --port 8188 [--config sim.toml]
    python -m comfysim --nodes 8 --base-port 8200

Embedding (a background thread with its own asyncio loop)::

    from comfysim import SimConfig, start_sim, start_sims

    sim = start_sim(SimConfig(models={"checkpoints": ["v1-5-pruned-emaonly.safetensors"]}),
                    host="127.0.0.1", port=0)      # port 0 picks a free port
    sim.url                     # "http://127.0.0.1:40123"
    sim.set_faults(raise_in_node="KSampler")      # see comfysim.faults for every fault
    sim.reset_faults()
    sim.stop()

    cluster = start_sims(8, SimConfig(), base_port=0)   # 8 nodes, one thread, one loop
    cluster.urls; cluster.stop()

``load_config(path)`` reads a TOML file into a SimConfig, ``DEMO_MODELS`` is a
preset of typical model files (``preset = "demo"`` in TOML).
"""

from .config import DEMO_MODELS, SimConfig, config_from_dict, load_config
from .errors import ConfigError, SimError
from .faults import Faults
from .runtime import SimCluster, SimHandle, start_sim, start_sims

__all__ = [
    "DEMO_MODELS",
    "ConfigError",
    "Faults",
    "SimCluster",
    "SimConfig",
    "SimError",
    "SimHandle",
    "config_from_dict",
    "load_config",
    "start_sim",
    "start_sims",
]
