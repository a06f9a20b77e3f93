"""The node registry: live node states, capabilities and slot reservations.

Everything here is live, rebuildable state: a node's state expires unless
its agent refreshes it, and reservations can be rebuilt from the database after the
registry lost them. Money and job truth never live here.

Choosing and reserving a slot is one atomic step (:meth:`Registry.reserve`), so several
studio processes can dispatch at once without double-booking a node.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

#: How long a node stays listed after its last heartbeat.
DEFAULT_TTL_SECONDS = 6.0
#: How long a reservation freed by :meth:`Registry.end` cannot be restored: longer than
#: the lifecycle consumer takes to write the end to the database, short enough that the
#: marks of finished jobs do not pile up.
DEFAULT_ENDED_SECONDS = 300.0


@dataclass(frozen=True)
class NodeState:
    """What an agent reports about its ComfyUI, at least every couple of seconds."""

    node_id: str
    online: bool
    #: Jobs the node may hold at once: one running plus ``depth`` waiting in ComfyUI's queue.
    slots: int = 2
    simulated: bool = False
    #: Operator-facing name (host name); never the ComfyUI URL, which browsers must not see.
    label: str = ""
    queue_remaining: int = 0
    running_job: str | None = None
    vram_total_mb: float = 0.0
    vram_free_mb: float = 0.0
    #: Measured seconds per estimated second (1.0 = as predicted, 0.5 = twice as fast).
    speed: float = 1.0
    loaded_checkpoint: str | None = None
    #: Identifies the current capability set, so schedulers re-read it only on change.
    caps_version: str = ""
    updated_at: float = 0.0
    #: The prompt ids of the jobs the agent follows on its ComfyUI; None from an
    #: agent that does not report them. The sweeper re-sends a job on the node that its
    #: agent does not follow, for adoption.
    following: tuple[str, ...] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> "NodeState":
        data = json.loads(raw)
        if data.get("following") is not None:
            data["following"] = tuple(data["following"])
        # Fields of a newer agent are ignored, so agents and studios can be upgraded apart.
        return cls(**{k: v for k, v in data.items() if k in _STATE_FIELDS})


_STATE_FIELDS = frozenset(f.name for f in fields(NodeState))


@dataclass(frozen=True)
class Capabilities:
    """The node classes and model files a ComfyUI host has (from its ``/object_info``)."""

    classes: frozenset[str] = frozenset()
    #: Model files as ``"folder/file name"``, e.g. ``"checkpoints/v1-5-pruned-emaonly.safetensors"``.
    models: frozenset[str] = frozenset()

    def missing(self, classes: Iterable[str], models: Iterable[str]) -> list[str]:
        """What a workflow needs that this node lacks (empty: it can run it)."""
        return sorted(set(classes) - self.classes) + sorted(set(models) - self.models)

    def to_json(self) -> str:
        return json.dumps({"classes": sorted(self.classes), "models": sorted(self.models)})

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Capabilities":
        data = json.loads(raw)
        return cls(classes=frozenset(data["classes"]), models=frozenset(data["models"]))


@dataclass(frozen=True)
class Candidate:
    """A node able to run a job, with the extra seconds it would need first (a model switch)."""

    node_id: str
    penalty_seconds: float = 0.0


@dataclass(frozen=True)
class NodeView:
    """A live node as the scheduler and the admin page see it."""

    state: NodeState
    #: prompt id -> estimated seconds for the jobs holding a slot on this node. A prompt id
    #: names one attempt of a job (``{job_id}-{attempt}``), so a stale message of an earlier
    #: attempt never finds its slot held.
    reservations: Mapping[str, float] = field(default_factory=dict)

    @property
    def free_slots(self) -> int:
        return max(0, self.state.slots - len(self.reservations))

    @property
    def outstanding_seconds(self) -> float:
        return sum(self.reservations.values()) * self.state.speed


def choice_key(view: NodeView, candidate: Candidate) -> tuple[bool, float, str]:
    """Order of preference among nodes with a free slot: idle first, then the least
    predicted outstanding work (a needed model switch counts as work), then the id for
    determinism. The Redis Lua script implements the same order."""
    return (len(view.reservations) > 0, view.outstanding_seconds + candidate.penalty_seconds, view.state.node_id)


class Registry(abc.ABC):
    """Interface of the node registry. Every method is safe to call from any thread."""

    @abc.abstractmethod
    def heartbeat(self, state: NodeState, *, ttl: float = DEFAULT_TTL_SECONDS) -> None:
        """Store ``state``; the node disappears ``ttl`` seconds after its last heartbeat."""

    @abc.abstractmethod
    def remove(self, node_id: str) -> None:
        """Forget a node's state at once (an agent shutting down cleanly)."""

    @abc.abstractmethod
    def set_capabilities(self, node_id: str, caps: Capabilities) -> None: ...

    @abc.abstractmethod
    def capabilities(self, node_id: str) -> Capabilities | None: ...

    @abc.abstractmethod
    def nodes(self) -> list[NodeView]:
        """Every node with a live heartbeat, with its reservations, ordered by id."""

    @abc.abstractmethod
    def reserve(self, candidates: Sequence[Candidate], prompt_id: str, estimate_seconds: float) -> str | None:
        """Atomically pick the best live candidate with a free slot and reserve it for
        ``prompt_id`` (the job attempt's prompt id); the chosen node id, or None when every
        candidate is full or gone, or when the prompt id already holds a slot on one of them
        (another dispatcher is placing this job: only the first may go on)."""

    @abc.abstractmethod
    def release(self, node_id: str, prompt_id: str) -> bool:
        """Free the slot ``prompt_id`` holds on ``node_id``; False if it held none."""

    @abc.abstractmethod
    def end(self, node_id: str, prompt_id: str, *, remember: float = DEFAULT_ENDED_SECONDS) -> bool:
        """The node says ``prompt_id`` is over (it finished, failed, or will not run): free
        its slot now, before the database knows, and refuse to :meth:`restore` it for
        ``remember`` seconds, so a sweeper that still reads the job as on the node does not
        hand the slot back. False if it held no slot."""

    @abc.abstractmethod
    def reservations(self, node_id: str) -> dict[str, float]:
        """The jobs holding a slot on ``node_id`` (whether or not the node is live)."""

    def holds(self, node_id: str, prompt_id: str) -> bool:
        """Whether ``prompt_id`` still holds a slot on ``node_id`` (an agent checks this
        before running a job, so a job moved elsewhere never runs twice)."""
        return prompt_id in self.reservations(node_id)

    @abc.abstractmethod
    def epoch(self) -> str:
        """An id of the registry's current contents, the same for every caller until the
        registry loses its data (Redis restarted without persistence, a flush, a new
        in-process registry): then it changes. A dispatcher that sees a new epoch restores
        the reservations from the database before it books any slot."""

    @abc.abstractmethod
    def restore(self, node_id: str, reservations: Mapping[str, float]) -> int:
        """Put back reservations lost with the registry's data (rebuilt from the database),
        except those :meth:`end` freed recently; the number put back."""

    @abc.abstractmethod
    def reserved_nodes(self) -> list[str]:
        """Every node id that has reservations, live or not."""

    def close(self) -> None:
        """Release connections; the registry is unusable afterwards."""
