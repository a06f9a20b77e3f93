"""End-to-end: backend, worker, agents and simulated ComfyUI nodes together."""
