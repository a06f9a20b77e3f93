"""Benchmark 9 — scaling: the cluster benchmark's workload at 2, 8, 32 and 200 nodes.

The studio's dispatcher only (``ours`` of ``python -m bench cluster``), with the work per
node held constant: ``--jobs-per-node`` heavy-tailed jobs per node (Pareto, seeded), in the
same four bursts, submitted by ``--clients`` threads. For each size: makespan ÷ the lower
bound max(measured work / nodes, longest job), what one ``submit()`` call costs while
the cluster runs, and how long the lifecycle consumer's events waited (the database's
view of a job; the node's slot is freed as its end event arrives). The nodes (comfysim)
and their agents run in ``--hosts`` child processes (4; 0: this process, where 200 agents
missed their heartbeats), on the same machine, so the larger sizes also measure how much
of its cores they leave for the control plane. The bus is a RabbitMQ the benchmark starts
(``--broker private``): 200 nodes' quorum queues and connections need more open files than
a broker started with the usual 1,024 has.

    python -m bench scaling [--nodes 2,8,32,200] [--jobs-per-node 20] [--hosts 4] [--broker private]
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from . import cluster, common


def main(argv: list[str] | None = None) -> dict[int, dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m bench scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="2,8,32,200", help="cluster sizes, comma-separated")
    parser.add_argument("--jobs-per-node", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-seconds", type=float, default=0.25, help="Pareto scale: the shortest job")
    parser.add_argument("--cap-seconds", type=float, default=5.0, help="longest job allowed")
    parser.add_argument("--burst-gap", type=float, default=2.0, help="seconds between the 4 bursts")
    parser.add_argument("--clients", type=int, default=6, help="threads submitting each burst")
    parser.add_argument("--hosts", type=int, default=4,
                        help="child processes running the nodes and agents (0: this process)")
    parser.add_argument("--broker", choices=("private", "shared"), default="private",
                        help="RabbitMQ: one the benchmark starts (default; 200 nodes need more open files than "
                             "a broker started with 1,024 has) or the shared one of STUDIO_TEST_AMQP_URL")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    common.quiet_logs()
    with common.private_broker() if args.broker == "private" else contextlib.nullcontext():
        return _run(args, argv)


def _run(args: argparse.Namespace, argv: list[str] | None) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    rows = []
    for nodes in (int(n) for n in args.nodes.split(",")):
        jobs = cluster.workload(args.jobs_per_node * nodes, seed=args.seed, alpha=1.6, minimum=args.min_seconds,
                                cap=args.cap_seconds, bursts=cluster.four_bursts(args.burst_gap))
        r = results[nodes] = cluster.run_policy("ours", jobs, nodes=nodes, clients=args.clients, hosts=args.hosts)
        load = common.machine().split("(load average at the end: ")[1].split(")")[0]
        r["load"] = load
        print(f"{nodes} nodes, {len(jobs)} jobs: makespan {r['makespan']:.2f} s, bound {r['bound']:.2f} s → "
              f"{r['ratio']:.3f}; submit() p50/p99 {r['submit'][0] * 1000:.1f}/{r['submit'][1] * 1000:.1f} ms; "
              f"lifecycle event lag p50/p99 {r['lag'][0] * 1000:.0f}/{r['lag'][1] * 1000:.0f} ms; "
              f"{r['failed']} failed; load {load}", flush=True)
        rows.append([nodes, len(jobs), f"{r['makespan']:.2f} s", f"{r['bound']:.2f} s", f"**{r['ratio']:.3f}**",
                     f"{r['submit'][0] * 1000:.1f} ms / {r['submit'][1] * 1000:.1f} ms",
                     f"{r['lag'][0] * 1000:.0f} ms / {r['lag'][1] * 1000:.0f} ms", r["failed"], load])
    out = common.table(["nodes", "jobs", "makespan", "lower bound", "ratio", "`submit()` p50 / p99",
                        "lifecycle event lag p50 / p99", "failed", "load average at the end"], rows)
    print(out)
    if not args.no_write:
        where = (f"the nodes and agents in {args.hosts} child processes (`bench.hosts`)" if args.hosts
                 else "every node and agent in this one process")
        broker = ("a RabbitMQ of the benchmark's own (`tests/private_servers.py`; its open-file limit: "
                  f"{common.open_files_limit()}; ~200 nodes exhaust a broker started with 1,024)"
                  if args.broker == "private" else "the shared RabbitMQ")
        cmd = "python -m bench scaling" + ("" if argv is None else " " + " ".join(argv))
        common.write_section("scaling", f"""## 9. Scaling

`{cmd.strip()}` — the studio's dispatcher on {args.jobs_per_node} jobs per node (Pareto lengths, shape 1.6,
shortest {args.min_seconds} s, capped at {args.cap_seconds} s, seed {args.seed}; comfysim at
{cluster.STEP_SECONDS} s per step), in 4 bursts {args.burst_gap:g} s apart, {args.clients} submitting threads; {where}; {broker}. Lower bound = max(measured work / nodes, longest job). {common.machine()}.

{out}
""")
    return results


if __name__ == "__main__":
    main()
