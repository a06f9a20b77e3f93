"""``python -m bench [name] [options]``: run one benchmark, or all of them in order."""

from __future__ import annotations

import signal
import sys
import time

from . import cluster, dispatch_pass, event_path, lifecycle, reconnect, recovery, scaling, studio_sessions, submit_path, uploads

BENCHMARKS = {
    "submit": submit_path.main,
    "event": event_path.main,
    "cluster": cluster.main,
    "uploads": uploads.main,
    "studio": studio_sessions.main,
    "recovery": recovery.main,
    "reconnect": reconnect.main,
    "dispatch": dispatch_pass.main,
    "scaling": scaling.main,
    "lifecycle": lifecycle.main,
}


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    # A benchmark killed with SIGTERM (``kill``, ``timeout``) unwinds like Ctrl-C, so its
    # clean-up runs: what it declared on the shared RabbitMQ (hundreds of quorum queues
    # in the 200-node runs) and its Redis keys would otherwise stay there, and a broker
    # restarted with them took minutes to take connections again.
    signal.signal(signal.SIGTERM, _stop)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks:", ", ".join(BENCHMARKS))
        return 0
    if argv and argv[0] in BENCHMARKS:
        BENCHMARKS[argv[0]](argv[1:])
        return 0
    if argv:
        print(f"unknown benchmark {argv[0]!r}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name, run in BENCHMARKS.items():
        started = time.monotonic()
        print(f"== {name} ==", flush=True)
        run([])
        print(f"== {name}: {time.monotonic() - started:.0f} s ==", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
