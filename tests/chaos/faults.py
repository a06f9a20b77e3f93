"""The faults the chaos suite injects.

Each fault takes the cluster and the scenario's random stream, does its damage, waits only
as long as the fault itself needs (a node's downtime, a broker outage) and returns once
the cluster is expected to heal by itself; the heal is then the system's business, not the
fault's. Every fault that stops a server starts it again in a ``finally``.
"""

from __future__ import annotations

import logging
import os
import random
import time

from backend.errors import Unavailable

from ..private_servers import PrivateServers
from .checks import active_tickets
from .cluster import AGENT_LOST_AFTER, AGENT_STATE_TTL, POISON_WORKFLOW, Cluster, Load, wait_for

log = logging.getLogger("tests.chaos")


# ---- the servers (the suite's private ones, see conftest.py) -------------------------------


def ensure_servers_up(servers: PrivateServers) -> None:
    """Whatever a scenario did: PostgreSQL runs, the broker's app runs and Redis answers."""
    if servers.postgres is not None and not servers.postgres.accepts():
        servers.postgres.start()
    if servers.rabbitmq is not None:
        servers.rabbitmq.start_app()
    if servers.redis is not None:
        proc = servers.redis.proc
        if proc is None or proc.poll() is not None:
            servers.redis.start()


# ---- the faults ----------------------------------------------------------------------------


def kill_agent(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """SIGKILL a node's agent mid-whatever and restart it after a moment: its jobs must be
    adopted, none lost or run twice."""
    node = cluster.nodes[rng.choice(sorted(cluster.nodes))]
    node.agent.kill()
    killed = time.monotonic()
    time.sleep(rng.uniform(0.0, 1.5))
    node.agent.start()
    cluster.wait_online(node.node_id, since=node.agent.started_at)
    away = time.monotonic() - killed
    # Beyond AGENT_LOST_AFTER its jobs move on, and a prompt its ComfyUI still runs may
    # run twice (docs/agent.md): say so rather than fail obscurely.
    assert away < AGENT_LOST_AFTER, f"the agent took {away:.1f} s to come back, longer than its jobs wait; host overloaded?"


def kill_comfysim(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """SIGKILL a ComfyUI (its queue and history die with it) and start it again after a
    while, empty, on the same port. Its running job fails (refunded), its waiting ones
    are requeued to any node."""
    node = cluster.nodes[rng.choice(sorted(cluster.nodes))]
    node.sim.kill()
    time.sleep(rng.uniform(0.5, 3.0))
    node.sim.start()
    node.sim.wait_up()
    cluster.wait_online(node.node_id, since=time.time())


def bounce_rabbitmq(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """``rabbitmqctl stop_app`` for a moment: every connection drops; unacked deliveries
    return; publishes wait for the broker."""
    rabbit = cluster.servers.rabbitmq
    assert rabbit is not None
    try:
        rabbit.stop_app()
        time.sleep(rng.uniform(0.5, 4.0))
    finally:
        rabbit.start_app()


def restart_redis(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """Restart Redis with its data gone: node states, capabilities and reservations vanish.
    Agents must register again and the sweeper must restore the reservations."""
    restarted = time.time()
    assert cluster.servers.redis is not None
    cluster.servers.redis.restart_empty()
    cluster.wait_all_online(since=restarted, timeout=15)
    wait_for(lambda: _reservations_restored(cluster), 15, "the sweeper restoring the reservations", interval=0.1)


def _reservations_restored(cluster: Cluster) -> bool:
    """Every job holding a node (in the database) holds its ticket in the registry again."""
    try:
        held, active = cluster.reservations()
    except Unavailable:  # Redis may still be settling
        return False
    return active <= held


def drop_websockets(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """Close every websocket of a node; half the time the new sessions then go silent for
    a few seconds (open, but nothing sent), so running jobs must be reconciled by polling."""
    node = cluster.nodes[rng.choice(sorted(cluster.nodes))]
    node.sim.set_faults(close_websockets=True)
    if rng.random() < 0.5:
        node.sim.set_faults(ws_silent=True)
        try:
            time.sleep(rng.uniform(2.0, 5.0))
        finally:
            node.sim.set_faults(ws_silent=False)


def submit_poison(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """A job that always fails on a node (every node raises in its one special class):
    it must fail and be refunded once, never be retried in a loop."""
    job_id = load.submit(POISON_WORKFLOW)
    assert job_id is not None, load.refused[-1:]
    load.poison.add(job_id)


def bounce_postgres(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """Stop PostgreSQL for a few seconds, cleanly (``-m fast``: sessions are ended) or as a
    crash (``-m immediate``: recovered from its log on start), then start it again. Every
    pooled connection dies; submits meanwhile are refused ("try again in a moment"); agent
    events wait in the lifecycle queue and are applied once it is back."""
    postgres = cluster.servers.postgres
    assert postgres is not None
    try:
        postgres.stop(rng.choice(("fast", "immediate")))
        time.sleep(rng.uniform(1.0, 5.0))
    finally:
        postgres.start()


#: The long outage: longer than every retry budget of the system (a publish's 10 s, the
#: lifecycle consumer's old 5 tries, the pool's connect timeout), so only a design that
#: waits for the database without limit keeps every event.
LONG_OUTAGE_SECONDS = (20.0, 30.0)


def long_postgres_outage(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """PostgreSQL away for 20–30 s while the nodes go on running their jobs (it goes
    away once jobs are on the nodes, so their events have to wait for it)."""
    postgres = cluster.servers.postgres
    assert postgres is not None
    wait_for(lambda: len(active_tickets(cluster.db)) >= 2, 20, "jobs on the nodes", interval=0.05)
    try:
        postgres.stop("immediate")
        time.sleep(rng.uniform(*LONG_OUTAGE_SECONDS))
    finally:
        postgres.start()


def partition_agent(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """Cut one agent off from RabbitMQ and Redis for longer than its state TTL, while its
    ComfyUI goes on running the prompts it has. The node expires from the registry; its
    jobs must wait for the agent (not run again elsewhere), and the returning agent
    reports them."""
    node_id = rng.choice(sorted(cluster.nodes))
    proxy = cluster.proxies[node_id]
    registry = cluster.stack.backend.registry
    proxy.cut()
    cut = time.monotonic()
    try:
        wait_for(lambda: all(v.state.node_id != node_id for v in registry.nodes()), AGENT_STATE_TTL + 10,
                 f"node {node_id} expiring while cut off")
        time.sleep(rng.uniform(2.0, 8.0))  # well past the TTL
    finally:
        proxy.heal()
    away = time.monotonic() - cut
    assert away < AGENT_LOST_AFTER, f"the partition lasted {away:.0f} s, longer than the jobs wait for an agent"
    cluster.wait_online(node_id, since=time.time())


def fill_asset_store(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """The asset store's disk is full for a few seconds: the outputs of jobs that finish
    meanwhile cannot be saved, so those jobs fail with a clear reason and a refund, and no
    half-written file is left; once there is space again, jobs succeed as before."""
    filler = cluster.assets_dir / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 20, 4096):  # big pieces, then the last few pages
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
        time.sleep(rng.uniform(2.0, 5.0))
    finally:
        os.close(fd)
        filler.unlink(missing_ok=True)


def stop_object_store(cluster: Cluster, rng: random.Random, load: Load) -> None:
    """The object store's gateway (Ceph RGW) stops for a few seconds: inputs cannot be
    fetched (the job goes back to the queue) and outputs cannot be uploaded (they wait on
    ComfyUI and are fetched again when the watchdog re-checks the job); no object is left
    half-written, and once the store is back jobs succeed as before."""
    assert cluster.rgw is not None
    try:
        cluster.rgw.stop_gateway()
        time.sleep(rng.uniform(1.0, 4.0))
    finally:
        cluster.rgw.start_gateway()
