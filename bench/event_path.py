"""Benchmark 2 — the event path: a comfysim ``progress`` event → the user event delivered to
a studio consumer.

The clock starts when comfysim's executor emits the ``progress`` websocket message (its
hub's ``send``, probed) and stops when the studio's user-event
subscription (``Bus.subscribe_user_events``, the consumer that feeds browser sessions)
receives the matching ``progress`` user event. The agents pace progress (at most one event
per job per ``progress_interval``, the latest value always delivered): latency is measured
for the steps that went out, and a step counts as lost only when neither it nor a later
step of its job reached the studio. In between: comfysim's websocket write, the
agent's socket thread, its job loop, the agent's publish to the user-event exchange, and
RabbitMQ's delivery to the studio's private queue.

Events are paced by comfysim's ``step_seconds`` (one ``progress`` per sampler step);
``--nodes`` nodes each run one long job at ``rate / nodes`` steps per second. The nodes and
their agents run in a child process (``bench.hosts``), as GPU hosts are other machines
than the studio; the clocks are ``time.monotonic()``, one clock for all processes on Linux.

    python -m bench event [--runs 3] [--rate 2000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from . import common
from .common import Runs, mark, ms, ms_list, percentile

WORKFLOW = "bench-sampler"


class EventProbe:
    """Arrival times of ``progress`` user events at the studio consumer, per (job, step)."""

    def __init__(self) -> None:
        self.got: dict[tuple[str, int], float] = {}
        #: the leg from the agent making the user event (its ``ts``) to the studio consumer
        self.leg: dict[tuple[str, int], float] = {}
        self.lock = threading.Lock()

    def on_user_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "progress":
            now, wall = time.monotonic(), time.time()
            key = (event["job_id"], int(event["value"]))
            with self.lock:
                self.got.setdefault(key, now)
                self.leg.setdefault(key, wall - float(event.get("ts") or wall))


def run_once(*, rate: float, seconds: float, nodes: int, step_scale: float, separate: bool) -> dict[str, Any]:
    from backend.jobs.submit import Accepted, submit
    from comfysim import DEMO_MODELS, SimConfig

    per_node = rate / nodes
    # A step costs comfysim a little more than its sleep; step_scale shortens the sleep
    # so the emitted rate reaches the target (the emitted rate is measured and reported).
    step = step_scale / per_node
    probe = EventProbe()
    warmup = 1.0
    # Enough steps to sample through the warm-up, the window and a margin, even when a
    # loaded machine is slow to start them.
    steps = int(per_node * (seconds + warmup + 6))
    workflows = common.library(common.BENCH_WORKFLOWS)
    emitted: list[tuple[str, int, float]] = []
    in_process = 0 if separate else nodes

    def record_in_process(handle: Any) -> None:
        hub = handle.node.hub
        inner = hub.send

        def send(event: str, data: Any, sid: str | None = None) -> None:
            if event == "progress":
                emitted.append((str(data["prompt_id"]), int(data["value"]), time.monotonic()))
            inner(event, data, sid)

        hub.send = send

    with common.distributed_stack(nodes=in_process, sim=SimConfig(models=DEMO_MODELS, step_seconds=step),
                                  workflows=workflows) as stack:
        elsewhere = contextlib.ExitStack()
        records: list[Path] = []
        if separate:
            records = elsewhere.enter_context(common.host_processes(
                stack.backend, stack.tmp, nodes=nodes, processes=1, step_seconds=step, record=True))
            stack.wait_nodes(nodes)
        else:
            for handle in stack.sims.nodes:
                record_in_process(handle)
        subscription = stack.backend.bus.subscribe_user_events(probe.on_user_event)
        try:
            user = stack.user("bench-events")
            ids = []
            for _ in range(nodes):
                result = submit(stack.backend, user.id, WORKFLOW, {"prompt": "events", "steps": steps, "seed": 1},
                                idempotency_key=uuid.uuid4().hex, on_queued=stack.worker.wake)
                assert isinstance(result, Accepted), result
                ids.append(result.job.id)
            # Measure a window in the middle of the jobs, once every node is sampling (its
            # first progress reached the studio: the agents send a job's first at once).
            deadline = time.monotonic() + 30
            while not _every_job_heard(probe, nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("no progress events reach the studio")
                time.sleep(0.01)
            start = time.monotonic() + warmup
            end = start + seconds
            time.sleep(max(0.0, end - time.monotonic()) + 1.0)  # + time for the last ones to arrive
            stack.wait_ended(ids, timeout=120)
        finally:
            subscription.close()
            elsewhere.close()  # the host process stops and writes its record
            for record in records:
                emitted.extend(tuple(x) for x in json.loads(record.read_text()))
    window = [(p.rsplit("-", 1)[0], v, t) for p, v, t in emitted if start <= t < end]
    if not window:
        raise RuntimeError(f"the jobs' {steps} steps ended before the measured window: the machine ran them slower "
                           f"than the window's placement allows for (load average {os.getloadavg()[0]:.1f})")
    with probe.lock:
        # The agent paces progress (a few events a second per job, the latest value always
        # delivered): a step is delivered when it or a later step of its job arrived; its
        # latency is measured for the steps that went out themselves.
        lat = [probe.got[(j, v)] - t for j, v, t in window if (j, v) in probe.got]
        leg = [probe.leg[(j, v)] for j, v, t in window if (j, v) in probe.leg]
        latest: dict[str, int] = {}
        for j, v in probe.got:
            latest[j] = max(v, latest.get(j, v))
        carried = sum(1 for t in probe.got.values() if start <= t < end)
    lost = sum(1 for j, v, _ in window if v > latest.get(j, -1))
    return {"latency": lat, "leg": leg, "rate": len(window) / seconds, "lost": lost, "emitted": len(window),
            "carried": carried / seconds}


def _every_job_heard(probe: EventProbe, jobs: int) -> bool:
    with probe.lock:
        return len({job for job, _ in probe.got}) >= jobs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench event", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=2000.0, help="progress events per second in total")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--step-scale", type=float, default=0.6,
                        help="comfysim step_seconds = step_scale × nodes / rate (a step costs more than its sleep)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the comfysim nodes and agents in this process instead of a host process")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    common.quiet_logs()

    lat, leg = Runs(), Runs()
    rates: list[float] = []
    carried: list[float] = []
    lost: list[int] = []
    for i in range(args.runs):
        r = run_once(rate=args.rate, seconds=args.seconds, nodes=args.nodes, step_scale=args.step_scale,
                     separate=not args.in_process)
        lat.add(r["latency"])
        leg.add(r["leg"])
        rates.append(r["rate"])
        carried.append(r["carried"])
        lost.append(r["lost"])
        print(f"run {i + 1}: {r['rate']:.0f} events/s emitted, {r['carried']:.0f}/s carried, p50 {ms(percentile(r['latency'], 50))} "
              f"p99 {ms(percentile(r['latency'], 99))} (agent → studio p50 {ms(percentile(r['leg'], 50))} "
              f"p99 {ms(percentile(r['leg'], 99))}), {r['lost']} of {r['emitted']} not delivered", flush=True)
    p50, p99 = lat.p(50), lat.p(99)
    rows = [
        ["comfysim event → studio consumer, p50", ms(p50), "≤ 5 ms", mark(p50 <= 0.005), ms_list(lat.per_run(50))],
        ["comfysim event → studio consumer, p99", ms(p99), "≤ 25 ms", mark(p99 <= 0.025), ms_list(lat.per_run(99))],
        ["of which: agent's user event → studio consumer, p50 / p99", f"{ms(leg.p(50))} / {ms(leg.p(99))}", "—", "",
         ms_list(leg.per_run(99)) + " (p99)"],
        ["events/s emitted by comfysim (target load 2,000/s)", f"{statistics.median(rates):.0f}/s", "2,000/s",
         mark(statistics.median(rates) >= 0.95 * 2000), ", ".join(f"{x:.0f}" for x in rates)],
        ["progress events carried to the studio (paced by the agents)", f"{statistics.median(carried):.0f}/s", "—", "",
         ", ".join(f"{x:.0f}" for x in carried)],
        ["steps whose value never reached the studio (of the window)", str(statistics.median(lost)), "0",
         mark(max(lost) == 0),
         ", ".join(map(str, lost))],
    ]
    out = common.table(["figure", "median of runs", "target", "", "per run"], rows)
    print(out)
    if not args.no_write:
        cmd = "python -m bench event" + ("" if argv is None else " " + " ".join(argv))
        common.write_section("event", f"""## 2. Event path

`{cmd.strip()}` — {args.runs} runs, {args.nodes} comfysim nodes with their agents in
{"this process" if args.in_process else "a host process (`bench.hosts`)"} each sampling one long job
(`step_seconds` {args.step_scale * args.nodes / args.rate * 1000:.2f} ms, aiming at {args.rate / args.nodes:g} steps/s per node;
the rate actually emitted is measured), a {args.seconds:g} s window per run. {common.machine()}.

{out}
""")
    return {"p50": p50, "p99": p99, "rate": statistics.median(rates)}


if __name__ == "__main__":
    main()
