"""Benchmark 1 — the submit path: ``submit()`` → the job consumed by the node's agent.

The clock starts when a creator's submit is called and stops when the agent's job
consumer receives the job message (the entry of ``JobRunner.handle_delivery``, probed by
wrapping it on the agent instance). In between: replay check, validation, pricing,
capability check, the charge transaction, the ``queued`` user event, waking the
dispatcher, the backlog query, the Redis reservation script, the ``dispatched``
transaction, the confirmed publish of the job and its delivery by RabbitMQ.

Beside it, in the same run and on the same servers, the bare round trips this path cannot
avoid: one SQL transaction (an UPDATE and a commit on a psycopg connection), one Redis
script (EVALSHA) and one confirmed publish of a persistent message to a quorum queue.

Two phases per run:

- **latency**: one creator submitting at a steady, low rate (every slot free), so each
  figure is the path itself, not queueing behind other submits;
- **throughput**: several creators submitting as fast as they can (``queue_if_busy``),
  nodes with deep ComfyUI queues; sustained submits/s = jobs consumed by agents per second
  of wall time from the first submit to the last job consumed.

    python -m bench submit [--runs 3] [--latency-jobs 150] [--throughput-jobs 300]
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

from . import common
from .common import Runs, mark, ms, ms_list, percentile

WORKFLOW = "bench-sampler"
PARAMS = {"prompt": "a lighthouse", "steps": 1, "seed": 1}


class ConsumedProbe:
    """Records when each job reaches an agent's job handler."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.cond = threading.Condition()

    def attach(self, agent: Any) -> None:
        inner = agent.runner.handle_delivery

        def handle(delivery: Any) -> None:
            now = time.perf_counter()
            job_id = delivery.body.get("job_id")
            with self.cond:
                self.at.setdefault(job_id, now)
                self.cond.notify_all()
            inner(delivery)

        agent.runner.handle_delivery = handle

    def wait(self, job_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(j in self.at for j in job_ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sum(j not in self.at for j in job_ids)
                    raise RuntimeError(f"{missing} job(s) never reached an agent within {timeout} s")
                self.cond.wait(left)


# ---- bare round trips --------------------------------------------------------------------

class Bare:
    """The three round trips a submit needs at least, on their own connections."""

    def __init__(self, stack: common.Stack) -> None:
        import pika
        import psycopg
        import redis
        from sqlalchemy.engine import make_url

        url = make_url(stack.backend.db.url)
        self._schema_opts = dict(url.query).get("options")
        self.sql = psycopg.connect(
            host=url.host, port=url.port or 5432, user=url.username, dbname=url.database,
            password=url.password, options=self._schema_opts or "",
        )
        self.sql.execute("CREATE TABLE IF NOT EXISTS bench_bare (id int PRIMARY KEY, n bigint NOT NULL)")
        self.sql.execute("INSERT INTO bench_bare VALUES (1, 0) ON CONFLICT DO NOTHING")
        self.sql.commit()
        self.redis = redis.Redis.from_url(common.REDIS_URL)
        self.script = self.redis.register_script("return redis.call('HLEN', KEYS[1])")
        self.key = "{" + common.private("bare") + "}:h"
        self.amqp = pika.BlockingConnection(pika.URLParameters(common.AMQP_URL))
        self.channel = self.amqp.channel()
        self.channel.confirm_delivery()
        self.queue = common.private("bare")
        self.channel.queue_declare(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
        self.props = pika.BasicProperties(content_type="application/json", delivery_mode=2)

    def sql_tx(self) -> float:
        t = time.perf_counter()
        self.sql.execute("UPDATE bench_bare SET n = n + 1 WHERE id = 1")
        self.sql.commit()
        return time.perf_counter() - t

    def redis_script(self) -> float:
        t = time.perf_counter()
        self.script(keys=[self.key])
        return time.perf_counter() - t

    def publish(self) -> float:
        t = time.perf_counter()
        self.channel.basic_publish("", self.queue, b'{"bench": true}', self.props, mandatory=True)
        return time.perf_counter() - t

    def sample(self, count: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"sql": [], "redis": [], "publish": []}
        for _ in range(count):
            out["sql"].append(self.sql_tx())
            out["redis"].append(self.redis_script())
            out["publish"].append(self.publish())
        return out

    def close(self) -> None:
        self.channel.queue_delete(self.queue)
        self.amqp.close()
        self.redis.close()
        self.sql.execute("DROP TABLE bench_bare")
        self.sql.commit()
        self.sql.close()


# ---- one run -----------------------------------------------------------------------------

def _submit(stack: common.Stack, user: Any, **kw: Any) -> tuple[str, float]:
    from backend.jobs.submit import Accepted, submit

    t = time.perf_counter()
    kw.setdefault("queue_if_busy", True)  # nodes have deep queues; never ask "queue anyway?"
    result = submit(stack.backend, user.id, WORKFLOW, PARAMS, idempotency_key=uuid.uuid4().hex,
                    on_queued=stack.worker.wake, **kw)
    if not isinstance(result, Accepted):
        raise RuntimeError(f"submit not accepted: {result}")
    return result.job.id, t


def run_once(*, nodes: int, latency_jobs: int, rate: float, throughput_jobs: int, clients: int,
             depth: int) -> dict[str, Any]:
    from comfysim import DEMO_MODELS, SimConfig

    probe = ConsumedProbe()
    sim = SimConfig(models=DEMO_MODELS, step_seconds=0.0)
    workflows = common.library(common.BENCH_WORKFLOWS)
    with common.distributed_stack(nodes=nodes, sim=sim, workflows=workflows, depth=depth,
                                  before_agent_start=probe.attach) as stack:
        bare = Bare(stack)
        try:
            user = stack.user("bench-submit")
            # Warm up: connections, declarations, caches.
            warm = [_submit(stack, user)[0] for _ in range(20)]
            probe.wait(warm, 30)
            stack.wait_ended(warm, 60)
            bare.sample(20)

            # Latency: a steady trickle; the bare round trips are sampled between submits.
            bare_samples: dict[str, list[float]] = {"sql": [], "redis": [], "publish": []}
            sent: dict[str, float] = {}
            call: list[float] = []
            interval = 1.0 / rate
            next_at = time.perf_counter()
            for _ in range(latency_jobs):
                time.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += interval
                job_id, t = _submit(stack, user)
                call.append(time.perf_counter() - t)
                sent[job_id] = t
                probe.wait([job_id], 30)  # one at a time: no submit waits behind another
                for k, v in bare.sample(1).items():
                    bare_samples[k].extend(v)
            latency = [probe.at[j] - t for j, t in sent.items()]
            stack.wait_ended(list(sent), 60)

            # Throughput: clients submitting back to back.
            ids: list[str] = []
            starts: list[float] = []
            lock = threading.Lock()
            per_client = throughput_jobs // clients

            def client(n: int) -> None:
                me = stack.user(f"bench-client-{n}")
                for _ in range(per_client):
                    job_id, t = _submit(stack, me)
                    with lock:
                        ids.append(job_id)
                        starts.append(t)

            threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            submitted = time.perf_counter() - t0
            probe.wait(ids, 120)
            consumed_last = max(probe.at[j] for j in ids)
            loaded = [probe.at[j] - t for j, t in zip(ids, starts)]
            # No wait for these jobs to end: the stack (and its private schema) goes away.
        finally:
            bare.close()
    bare_sum = [s + r + p for s, r, p in zip(bare_samples["sql"], bare_samples["redis"], bare_samples["publish"])]
    return {
        "latency": latency,
        "call": call,
        "bare": bare_samples,
        "bare_sum": bare_sum,
        "throughput": len(ids) / (consumed_last - t0),
        "submit_rate": len(ids) / submitted,
        "loaded": loaded,
        "jobs": len(ids),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench submit", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--latency-jobs", type=int, default=150)
    parser.add_argument("--rate", type=float, default=50.0, help="submits/s in the latency phase")
    parser.add_argument("--throughput-jobs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--depth", type=int, default=64, help="ComfyUI queue depth per node in the throughput phase")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args(argv)
    common.quiet_logs()

    lat, call, loaded, bare_sum = Runs(), Runs(), Runs(), Runs()
    bare = {"sql": Runs(), "redis": Runs(), "publish": Runs()}
    rates: list[float] = []
    submit_rates: list[float] = []
    for i in range(args.runs):
        r = run_once(nodes=args.nodes, latency_jobs=args.latency_jobs, rate=args.rate,
                     throughput_jobs=args.throughput_jobs, clients=args.clients, depth=args.depth)
        lat.add(r["latency"]); call.add(r["call"]); loaded.add(r["loaded"]); bare_sum.add(r["bare_sum"])
        for k, runs in bare.items():
            runs.add(r["bare"][k])
        rates.append(r["throughput"]); submit_rates.append(r["submit_rate"])
        print(f"run {i + 1}: submit→agent p50 {ms(percentile(r['latency'], 50))} p99 {ms(percentile(r['latency'], 99))}; "
              f"bare sum p50 {ms(percentile(r['bare_sum'], 50))}; sustained {r['throughput']:.0f} jobs/s "
              f"(submit() alone {r['submit_rate']:.0f}/s)", flush=True)

    import statistics

    p50, p99 = lat.p(50), lat.p(99)
    b50 = bare_sum.p(50)
    ratio = statistics.median(percentile(a, 50) / percentile(b, 50) for a, b in zip(lat.runs, bare_sum.runs))
    rate = statistics.median(rates)
    figures = {"p50": p50, "p99": p99, "bare_p50": b50, "ratio": ratio, "rate": rate}
    rows = [
        ["submit → consumed by agent, p50", ms(p50), "≤ 5 ms", mark(p50 <= 0.005), ms_list(lat.per_run(50))],
        ["submit → consumed by agent, p99", ms(p99), "≤ 25 ms", mark(p99 <= 0.025), ms_list(lat.per_run(99))],
        ["sustained submits/s (consumed by agents)", f"{rate:.0f}/s", "≥ 300/s", mark(rate >= 300),
         ", ".join(f"{x:.0f}" for x in rates)],
        ["p50 ÷ p50 of the bare round trips' sum", f"{ratio:.2f}×", "≤ 2×", mark(ratio <= 2),
         ms_list(bare_sum.per_run(50)) + " ms (sum p50)"],
        ["`submit()` call alone, p50 / p99", f"{ms(call.p(50))} / {ms(call.p(99))}", "—", "", ""],
        ["submit → agent under the throughput load, p50 / p99", f"{ms(loaded.p(50))} / {ms(loaded.p(99))}", "—", "", ""],
        ["`submit()` calls/s by the clients alone", f"{statistics.median(submit_rates):.0f}/s", "—", "", ""],
        ["bare SQL transaction, p50 / p99", f"{ms(bare['sql'].p(50))} / {ms(bare['sql'].p(99))}", "—", "", ""],
        ["bare Redis script, p50 / p99", f"{ms(bare['redis'].p(50))} / {ms(bare['redis'].p(99))}", "—", "", ""],
        ["bare confirmed publish, p50 / p99", f"{ms(bare['publish'].p(50))} / {ms(bare['publish'].p(99))}", "—", "", ""],
    ]
    out = common.table(["figure", "median of runs", "target", "", "per run"], rows)
    print(out)
    if not args.no_write:
        cmd = "python -m bench submit" + ("" if argv is None else " " + " ".join(argv))
        common.write_section("submit", f"""## 1. Submit path

`{cmd.strip()}` — {args.runs} runs, {args.nodes} comfysim nodes, each run: {args.latency_jobs} submits
at {args.rate:g}/s for latency, then {args.clients} clients × {args.throughput_jobs // args.clients} submits back to back
for throughput; bare round trips sampled between the latency submits. {common.machine()}.

{out}
""")
    return figures


if __name__ == "__main__":
    main()
