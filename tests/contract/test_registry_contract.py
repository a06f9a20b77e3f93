"""Contract of the node registry: every test runs on the in-process registry and on Redis.

Redis tests use a fresh key prefix each and delete exactly those keys afterwards (never
FLUSHDB: other runs share the server). Locally they skip without Redis; in CI they fail.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from backend.errors import ConfigError, RegistryError
from backend.ports.memory_registry import MemoryRegistry
from backend.ports.redis_registry import RedisRegistry
from backend.ports.registry import Candidate, Capabilities, NodeState, Registry, choice_key

from .. import services
from ..waiting import wait_for

#: A TTL that runs out during the test, and one that never does. Tests wait for the first
#: to expire (with a generous ceiling) and never assume anything is still alive after a
#: short time: on a loaded machine any call may take longer than a short TTL.
SHORT_TTL = 0.3
LONG_TTL = 600.0
EXPIRY_WAIT = 30.0


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted at teardown."""
    url = urlsplit(services.REDIS_URL)
    services.require("Redis", url.hostname or "127.0.0.1", url.port or 6379)
    prefix = f"test-registry-{uuid.uuid4().hex[:12]}"
    yield prefix
    services.delete_redis_keys(prefix)


@pytest.fixture(params=["memory", "redis"])
def registry(request: pytest.FixtureRequest) -> Iterator[Registry]:
    """The in-process registry, then the Redis one."""
    if request.param == "memory":
        subject: Registry = MemoryRegistry()
    else:
        subject = RedisRegistry(services.REDIS_URL, prefix=request.getfixturevalue("redis_prefix"))
    yield subject
    subject.close()


@pytest.fixture
def lose_everything(registry: Registry, request: pytest.FixtureRequest) -> Callable[[], None]:
    """Drop all registry data, as a Redis restart without persistence (or a flush) does."""
    if isinstance(registry, MemoryRegistry):
        return registry.clear
    prefix = request.getfixturevalue("redis_prefix")
    return lambda: services.delete_redis_keys(prefix)


def node(node_id: str, **fields: Any) -> NodeState:
    return NodeState(node_id=node_id, online=fields.pop("online", True), **fields)


# --- states, expiry, capabilities -----------------------------------------------------


def test_heartbeat_lists_nodes_by_id_and_remove_forgets_one(registry: Registry) -> None:
    b = node("b", slots=3, label="gpu-b", speed=0.37, vram_total_mb=24576.5, running_job="j9", updated_at=1.5)
    registry.heartbeat(b)
    registry.heartbeat(node("a"))
    assert [view.state for view in registry.nodes()] == [node("a"), b]

    newer = node("a", online=False, queue_remaining=2, loaded_checkpoint="sd15.safetensors")
    registry.heartbeat(newer)
    registry.remove("b")
    registry.remove("never-seen")
    assert [view.state for view in registry.nodes()] == [newer]


def node_ids(registry: Registry) -> list[str]:
    return [view.state.node_id for view in registry.nodes()]


def test_node_disappears_ttl_after_its_last_heartbeat(registry: Registry) -> None:
    registry.heartbeat(node("silent"), ttl=SHORT_TTL)
    registry.heartbeat(node("refreshed"), ttl=SHORT_TTL)
    registry.heartbeat(node("steady"), ttl=LONG_TTL)
    registry.heartbeat(node("refreshed"), ttl=LONG_TTL)  # the latest heartbeat sets the expiry
    wait_for(lambda: "silent" not in node_ids(registry), EXPIRY_WAIT, "the silent node to expire")
    assert node_ids(registry) == ["refreshed", "steady"]
    assert registry.reserve([Candidate("silent")], "j1", 1.0) is None


def test_capabilities_round_trip_and_missing(registry: Registry) -> None:
    assert registry.capabilities("a") is None
    caps = Capabilities(
        classes=frozenset({"KSampler", "CheckpointLoaderSimple"}),
        models=frozenset({"checkpoints/sd15.safetensors", "loras/墨.safetensors"}),
    )
    registry.set_capabilities("a", caps)
    stored = registry.capabilities("a")
    assert stored == caps
    assert stored.missing(["KSampler"], ["loras/墨.safetensors"]) == []
    assert stored.missing(["KSampler", "VAEDecode"], ["checkpoints/sdxl.safetensors"]) == [
        "VAEDecode",
        "checkpoints/sdxl.safetensors",
    ]
    registry.set_capabilities("a", Capabilities())
    assert registry.capabilities("a") == Capabilities()


# --- the choice -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    #: node id -> (state, reservations already held)
    nodes: Mapping[str, tuple[NodeState, Mapping[str, float]]]
    candidates: list[Candidate]
    expected: str | None
    absent: list[str] = field(default_factory=list)


Setup = tuple[str, tuple[NodeState, Mapping[str, float]]]


def _n(node_id: str, held: Mapping[str, float] | None = None, **fields: Any) -> Setup:
    return node_id, (node(node_id, **fields), held or {})


SCENARIOS = {
    "idle beats busy even with a model switch": Scenario(
        dict([_n("a", {"x": 1.0}, speed=0.1), _n("b")]), [Candidate("a"), Candidate("b", 100.0)], "b"
    ),
    "least outstanding work": Scenario(
        dict([_n("a", {"x": 10.0}), _n("b", {"y": 12.0})]), [Candidate("a"), Candidate("b")], "a"
    ),
    "work is scaled by speed": Scenario(
        dict([_n("a", {"x": 10.0}), _n("b", {"y": 30.0}, speed=0.25)]), [Candidate("a"), Candidate("b")], "b"
    ),
    "a checkpoint switch counts as work": Scenario(
        dict([_n("a", {"x": 5.0}), _n("b", {"y": 2.0})]), [Candidate("a"), Candidate("b", 4.0)], "a"
    ),
    "among idle nodes the loaded checkpoint wins": Scenario(
        dict([_n("a"), _n("b")]), [Candidate("a", 20.0), Candidate("b")], "b"
    ),
    "fractional sums compare exactly": Scenario(
        # 0.1 + 0.2 == 0.30000000000000004 > 0.3 in binary floating point, on both sides.
        dict([_n("a", {"x": 0.1, "y": 0.2}, slots=3), _n("b", {"z": 0.3}, slots=3)]),
        [Candidate("a"), Candidate("b")],
        "b",
    ),
    "ties go to the lowest id in code-point order": Scenario(
        # "Z" < "a" by code point, though many locales' collation says otherwise.
        dict([_n("node-a"), _n("node-Z"), _n("node-é")]),
        [Candidate("node-é"), Candidate("node-a"), Candidate("node-Z")],
        "node-Z",
    ),
    "full nodes are skipped": Scenario(
        dict([_n("a", {"x": 1.0}, slots=1), _n("b", {"y": 50.0})]), [Candidate("a"), Candidate("b")], "b"
    ),
    "offline nodes are skipped": Scenario(
        dict([_n("a", online=False), _n("b", {"y": 50.0})]), [Candidate("a"), Candidate("b")], "b"
    ),
    "unknown candidates are skipped": Scenario(dict([_n("b", {"y": 1.0})]), [Candidate("ghost"), Candidate("b")], "b"),
    "only candidates are considered": Scenario(dict([_n("a"), _n("b", {"y": 9.0})]), [Candidate("b")], "b"),
    "everything full or offline": Scenario(
        dict([_n("a", {"x": 1.0, "w": 1.0}), _n("b", online=False)]), [Candidate("a"), Candidate("b")], None
    ),
    "no candidates": Scenario(dict([_n("a")]), [], None),
    "a removed node is never chosen": Scenario(
        dict([_n("a"), _n("b", {"y": 3.0})]), [Candidate("a"), Candidate("b")], "b", absent=["a"]
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_reserve_chooses_like_choice_key(registry: Registry, scenario: Scenario) -> None:
    for state, held in scenario.nodes.values():
        registry.heartbeat(state)
        registry.restore(state.node_id, held)
    for node_id in scenario.absent:
        registry.remove(node_id)

    # The reference: choice_key over what the registry itself lists.
    views = {view.state.node_id: view for view in registry.nodes()}
    eligible = [
        choice_key(views[c.node_id], c)
        for c in scenario.candidates
        if c.node_id in views and views[c.node_id].state.online and views[c.node_id].free_slots
    ]
    assert (min(eligible)[2] if eligible else None) == scenario.expected

    chosen = registry.reserve(scenario.candidates, "job", 2.5)
    assert chosen == scenario.expected
    if chosen is not None:
        assert registry.reservations(chosen) == {**scenario.nodes[chosen][1], "job": 2.5}
    assert registry.reserved_nodes() == sorted(
        {n for n, (_, held) in scenario.nodes.items() if held} | ({chosen} if chosen else set())
    )


# --- reservations ---------------------------------------------------------------------


def test_a_ticket_holding_a_slot_gets_no_second_one(registry: Registry) -> None:
    """Two dispatchers placing the same job: only the first may go on (the second would
    otherwise release the first one's slot when it loses the database update)."""
    registry.heartbeat(node("a", slots=1))
    registry.heartbeat(node("b", slots=1))
    assert registry.reserve([Candidate("a"), Candidate("b")], "job-1", 4.0) == "a"
    assert registry.reserve([Candidate("b"), Candidate("a")], "job-1", 4.0) is None
    assert registry.reservations("a") == {"job-1": 4.0}
    assert registry.reservations("b") == {}
    # A slot on a node that is not a candidate, or not live, does not count.
    assert registry.reserve([Candidate("b")], "job-1", 4.0) == "b"
    registry.remove("b")
    assert registry.reserve([Candidate("a"), Candidate("b")], "job-2", 1.0) is None  # a full, b gone
    registry.release("a", "job-1")
    assert registry.reserve([Candidate("a"), Candidate("b")], "job-1", 4.0) == "a"


def test_release_frees_the_slot_once(registry: Registry) -> None:
    registry.heartbeat(node("a", slots=1))
    assert registry.reserve([Candidate("a")], "j1", 1.0) == "a"
    assert registry.reserve([Candidate("a")], "j2", 1.0) is None
    assert registry.release("a", "j1") is True
    assert registry.release("a", "j1") is False
    assert registry.release("never-seen", "j1") is False
    assert registry.reserve([Candidate("a")], "j2", 1.0) == "a"


def test_end_frees_the_slot_and_keeps_it_from_being_restored_for_a_while(registry: Registry) -> None:
    registry.heartbeat(node("a", slots=1))
    assert registry.reserve([Candidate("a")], "j1", 1.0) == "a"
    assert registry.end("a", "j1") is True  # the node said j1 is over
    assert registry.end("a", "j1") is False
    assert registry.reservations("a") == {}
    # A sweeper that still reads j1 as on the node (the database not yet written) puts
    # back only what was really lost.
    assert registry.restore("a", {"j1": 1.0, "j2": 2.0}) == 1
    assert registry.reservations("a") == {"j2": 2.0}
    assert registry.end("b", "j3", remember=SHORT_TTL) is False  # nothing held: only remembered
    wait_for(lambda: registry.restore("b", {"j3": 3.0}) == 1, EXPIRY_WAIT, "the end of j3 to be forgotten")
    assert registry.reservations("b") == {"j3": 3.0}
    assert registry.reserved_nodes() == ["a", "b"]


def test_holds_tells_whether_the_job_still_has_its_slot(registry: Registry) -> None:
    registry.heartbeat(node("a"))
    assert registry.reserve([Candidate("a")], "j1", 1.0) == "a"
    assert registry.holds("a", "j1")
    assert not registry.holds("a", "j2")
    assert not registry.holds("b", "j1")
    registry.release("a", "j1")
    assert not registry.holds("a", "j1")


def test_reservations_keep_fractional_estimates_exactly(registry: Registry) -> None:
    registry.heartbeat(node("a", slots=6))
    estimates = {"third": 1 / 3, "tenth": 0.1, "tiny": 1e-7, "big": 123456.789, "int": 3, "eps": 1 + 2**-52}
    for job_id, seconds in estimates.items():
        assert registry.reserve([Candidate("a")], job_id, seconds) == "a"
    held = registry.reservations("a")
    assert held == estimates
    assert all(type(seconds) is float for seconds in held.values())
    assert registry.nodes()[0].outstanding_seconds == sum(estimates.values())


def test_reservations_outlive_the_node_state(registry: Registry) -> None:
    registry.heartbeat(node("a"))
    registry.heartbeat(node("b"))
    registry.reserve([Candidate("a")], "j1", 1.0)
    registry.reserve([Candidate("b")], "j2", 1.0)
    registry.heartbeat(node("a"), ttl=SHORT_TTL)  # a's last heartbeat
    registry.remove("b")
    wait_for(lambda: registry.nodes() == [], EXPIRY_WAIT, "node a to expire")
    # The node list forgets them; the reservations stay so their jobs can be requeued.
    assert registry.nodes() == []
    assert registry.reserved_nodes() == ["a", "b"]
    assert registry.reservations("a") == {"j1": 1.0}
    registry.release("a", "j1")
    assert registry.reserved_nodes() == ["b"]


def test_restore_after_the_data_was_lost(registry: Registry, lose_everything: Callable[[], None]) -> None:
    registry.heartbeat(node("a", slots=2))
    registry.set_capabilities("a", Capabilities(classes=frozenset({"KSampler"})))
    registry.reserve([Candidate("a")], "j1", 1.5)
    lose_everything()
    assert registry.nodes() == []
    assert registry.reservations("a") == {}
    assert registry.reserved_nodes() == []
    assert registry.capabilities("a") is None

    # Rebuilt from the database, then the agent's next heartbeat.
    assert registry.restore("a", {"j1": 1.5, "j2": 0.25}) == 2
    assert registry.restore("a", {}) == 0
    assert registry.reservations("a") == {"j1": 1.5, "j2": 0.25}
    assert registry.reserved_nodes() == ["a"]
    registry.heartbeat(node("a", slots=2))
    assert registry.nodes()[0].reservations == {"j1": 1.5, "j2": 0.25}
    assert registry.reserve([Candidate("a")], "j3", 1.0) is None  # restored slots count
    registry.release("a", "j2")
    assert registry.reserve([Candidate("a")], "j2", 9.0) == "a"


def test_the_epoch_changes_only_when_the_data_is_lost(
    registry: Registry, lose_everything: Callable[[], None], request: pytest.FixtureRequest
) -> None:
    first = registry.epoch()
    assert first and registry.epoch() == first
    registry.heartbeat(node("a"))
    registry.reserve([Candidate("a")], "j1", 1.0)
    registry.release("a", "j1")
    registry.remove("a")
    assert registry.epoch() == first  # ordinary changes keep it
    if isinstance(registry, RedisRegistry):  # every client of the same registry sees the same
        other = RedisRegistry(services.REDIS_URL, prefix=request.getfixturevalue("redis_prefix"))
        assert other.epoch() == first
        other.close()
    lose_everything()
    second = registry.epoch()
    assert second != first and registry.epoch() == second


# --- concurrency ----------------------------------------------------------------------

RACERS = 50


def _race(registry: Registry, job_ids: list[str], start: Callable[[], object]) -> list[str | None]:
    """Every job tries to reserve node "a" at once (each thread waits on ``start``)."""

    def attempt(job_id: str) -> str | None:
        start()
        return registry.reserve([Candidate("a")], job_id, 1.0)

    with ThreadPoolExecutor(max_workers=len(job_ids)) as pool:
        return list(pool.map(attempt, job_ids))


def test_concurrent_reservations_of_one_free_slot_have_one_winner(registry: Registry) -> None:
    registry.heartbeat(node("a", slots=2))
    registry.restore("a", {"busy": 1.0})
    job_ids = [f"j{i}" for i in range(RACERS)]
    chosen = _race(registry, job_ids, threading.Barrier(RACERS).wait)
    winners = [job for job, node_id in zip(job_ids, chosen) if node_id is not None]
    assert chosen.count("a") == 1 and chosen.count(None) == RACERS - 1
    assert registry.reservations("a") == {"busy": 1.0, winners[0]: 1.0}


def test_concurrent_reservations_of_one_ticket_have_one_winner(registry: Registry) -> None:
    for node_id in ("a", "b", "c"):
        registry.heartbeat(node(node_id, slots=RACERS))
    everywhere = [Candidate("a"), Candidate("b"), Candidate("c")]
    start = threading.Barrier(RACERS).wait

    def attempt(_: int) -> str | None:
        start()
        return registry.reserve(everywhere, "job-1", 1.0)

    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        chosen = list(pool.map(attempt, range(RACERS)))
    assert chosen.count(None) == RACERS - 1 and chosen.count("a") == 1
    assert registry.reserved_nodes() == ["a"]


def _race_from_process(prefix: str, job_ids: list[str], barrier: Any, results: Any) -> None:
    """Child-process body of the multi-process race (module level so spawn can import it)."""
    registry = RedisRegistry(services.REDIS_URL, prefix=prefix)
    try:
        registry.nodes()  # connect before the start line, so the race is about reserve
        barrier.wait()
        results.put(_race(registry, job_ids, lambda: None))
    finally:
        registry.close()


def test_processes_racing_for_one_slot_on_redis_have_one_winner(redis_prefix: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    processes, per_process = 4, 10
    # The timeout turns a child that died before the start line into a failure, not a hang;
    # it is generous because spawned children import everything again, slowly when loaded.
    barrier, results = spawn.Barrier(processes, timeout=120), spawn.Queue()
    children = [
        spawn.Process(
            target=_race_from_process,
            args=(redis_prefix, [f"p{p}-j{i}" for i in range(per_process)], barrier, results),
        )
        for p in range(processes)
    ]
    registry = RedisRegistry(services.REDIS_URL, prefix=redis_prefix)
    try:
        registry.heartbeat(node("a", slots=1), ttl=LONG_TTL)  # alive however slowly the children start
        for child in children:
            child.start()
        chosen = [node_id for _ in children for node_id in results.get(timeout=180)]
        for child in children:
            child.join(timeout=60)
            assert child.exitcode == 0
        assert chosen.count("a") == 1 and len(chosen) == processes * per_process
        assert len(registry.reservations("a")) == 1
    finally:
        registry.close()


# --- Redis only: layout, scripts, connection faults -----------------------------------


def test_redis_keys_stay_under_the_prefix_and_expire_by_redis(redis_prefix: str) -> None:
    registry = RedisRegistry(services.REDIS_URL, prefix=redis_prefix)
    client = redis.Redis.from_url(services.REDIS_URL, decode_responses=True)
    try:
        registry.heartbeat(node("a"), ttl=LONG_TTL)
        registry.heartbeat(node("b"), ttl=LONG_TTL)
        registry.set_capabilities("a", Capabilities())
        registry.reserve([Candidate("a")], "j1", 1.0)
        keys = set(client.scan_iter(match=f"{registry.key_prefix}*"))
        assert keys == {f"{registry.key_prefix}{name}" for name in ("node:a", "node:b", "caps:a", "res:a", "nodes")}
        assert 0 < client.pttl(f"{registry.key_prefix}node:a") <= LONG_TTL * 1000
        assert client.pttl(f"{registry.key_prefix}res:a") == -1  # reservations never expire

        for name in ("a", "b"):
            registry.heartbeat(node(name), ttl=SHORT_TTL)
        wait_for(lambda: registry.nodes() == [], EXPIRY_WAIT, "both nodes to expire")
        # Listing prunes the expired node without reservations from the known set.
        assert client.smembers(f"{registry.key_prefix}nodes") == {"a"}
        registry.end("a", "j1", remember=LONG_TTL)  # the mark of an end expires by Redis too
        assert 0 < client.pttl(f"{registry.key_prefix}ended:a:j1") <= LONG_TTL * 1000
    finally:
        client.close()
        registry.close()


def test_reserve_survives_a_script_flush(redis_prefix: str) -> None:
    """After a restart Redis has lost its script cache; the Script object reloads it."""
    registry = RedisRegistry(services.REDIS_URL, prefix=redis_prefix)
    client = redis.Redis.from_url(services.REDIS_URL)
    try:
        registry.heartbeat(node("a"))
        assert registry.reserve([Candidate("a")], "j1", 1.0) == "a"
        client.script_flush()
        assert registry.reserve([Candidate("a")], "j2", 1.0) == "a"
        registry.heartbeat(node("stale"), ttl=0.05)
        time.sleep(0.1)
        client.script_flush()
        assert [view.state.node_id for view in registry.nodes()] == ["a"]  # runs the prune script
    finally:
        client.close()
        registry.close()


def test_killed_connections_heal_on_the_next_call(redis_prefix: str) -> None:
    registry = RedisRegistry(services.REDIS_URL, prefix=redis_prefix)
    client = redis.Redis.from_url(services.REDIS_URL, decode_responses=True)
    try:
        registry.heartbeat(node("a"))
        mine = [c["id"] for c in client.client_list() if c["name"] == f"studio-registry:{redis_prefix}"]
        assert mine
        for client_id in mine:
            client.client_kill_filter(_id=client_id)
        assert [view.state.node_id for view in registry.nodes()] == ["a"]
    finally:
        client.close()
        registry.close()


@pytest.mark.timeout(60)  # an error, not a retry loop; the ceiling only catches a hang
def test_unreachable_redis_raises_registry_error() -> None:
    registry = RedisRegistry("redis://:secret@127.0.0.1:1/0", prefix="unreachable")
    with pytest.raises(RegistryError) as caught:
        registry.reserve([Candidate("a")], "j1", 1.0)
    assert "127.0.0.1:1" in str(caught.value) and "STUDIO_REDIS_URL" in str(caught.value)
    assert "secret" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    registry.close()


def test_bad_arguments_are_refused_before_redis() -> None:
    with pytest.raises(ConfigError, match="STUDIO_REDIS_URL"):
        RedisRegistry("http://127.0.0.1:6379")
    with pytest.raises(ValueError):
        RedisRegistry("redis://127.0.0.1:1/0", prefix="{tagged}")
    registry = RedisRegistry("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="finite"):
        registry.reserve([Candidate("a")], "j1", math.nan)
    with pytest.raises(ValueError, match="ttl"):
        registry.heartbeat(node("a"), ttl=0)
    registry.close()
