"""The node registry on Redis, shared by every studio process and agent.

Key layout (see ``docs/registry.md``); ``P`` is ``{prefix}`` with the braces, a Redis
Cluster hash tag, so every key of one registry lives in one slot and the scripts, which
receive every key they touch through ``KEYS``, work on a cluster too:

- ``P:node:<id>``  the node's :class:`NodeState` as JSON, expiring ``ttl`` after the last
  heartbeat (Redis's own PEXPIRE, so a silent agent disappears without any sweeper);
- ``P:caps:<id>``  its :class:`Capabilities` as JSON, no expiry;
- ``P:res:<id>``   hash prompt id (one attempt of a job) -> estimated seconds, one field per
  reserved slot;
- ``P:ended:<id>:<prompt id>``  present for a while after the node said that attempt is
  over (:meth:`Registry.end`), so ``restore`` does not bring its slot back;
- ``P:nodes``      set of node ids that heartbeated or hold reservations, so listings need
  no KEYS/SCAN over the keyspace;
- ``P:epoch``      a random id created by the first caller that finds none, so after Redis
  lost its data everyone sees a new one (:meth:`Registry.epoch`).

Choosing and reserving a slot is one Lua script (``reserve.lua``). Every redis-py error
is raised as :class:`RegistryError`; the client reconnects by itself, so after a Redis
restart the next call works again (and ``restore`` puts lost reservations back).
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ConfigError, RegistryError
from .registry import DEFAULT_ENDED_SECONDS, DEFAULT_TTL_SECONDS, Candidate, Capabilities, NodeState, NodeView, Registry

log = logging.getLogger(__name__ + ".RedisRegistry")

#: Seconds to wait for a connection, and for any reply, before the call fails.
CONNECT_TIMEOUT_SECONDS = 2.0
SOCKET_TIMEOUT_SECONDS = 5.0
#: No automatic retries: a reserve replayed after its reply was lost would find its own
#: prompt id and answer None (the prompt-id rule of Registry.reserve). A broken connection
#: still heals on the next call, because the pool replaces connections the server closed.
_NO_RETRY = Retry(NoBackoff(), 0)

_RESERVE_LUA = (Path(__file__).with_name("reserve.lua")).read_text(encoding="utf-8")

# Forget known node ids whose state expired and that hold no reservations. Re-checked
# here, atomically, because a heartbeat or a reserve may have come back since the caller
# looked. KEYS[1] = known set; KEYS[2i], KEYS[2i+1] = state, reservations of ARGV[i].
_PRUNE_LUA = """
for i = 1, #ARGV do
  if redis.call('EXISTS', KEYS[2 * i]) == 0 and redis.call('HLEN', KEYS[2 * i + 1]) == 0 then
    redis.call('SREM', KEYS[1], ARGV[i])
  end
end
return 0
"""


# Every known node's state and reservations in one command: a pipeline of a GET and an
# HGETALL per node cost 400 commands to pack and parse at 200 nodes, and the dispatcher and
# every "all busy?" question list the nodes. KEYS[2i-1], KEYS[2i] = state, reservations of
# the i-th node; the reply holds, per node, the state (nil if expired) and the flat HGETALL.
_LIST_LUA = """
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('GET', KEYS[i]) or false
  out[#out + 1] = redis.call('HGETALL', KEYS[i + 1])
end
return out
"""


# Put back lost reservations, except those a node said ended a moment ago.
# KEYS[1] = known set, KEYS[2] = the node's reservations, KEYS[2 + i] = the ended mark of
# the i-th prompt id; ARGV[1] = node id, ARGV[2i], ARGV[2i + 1] = prompt id, seconds (repr()).
_RESTORE_LUA = """
local restored = 0
for i = 1, #KEYS - 2 do
  if redis.call('EXISTS', KEYS[2 + i]) == 0 then
    redis.call('HSET', KEYS[2], ARGV[2 * i], ARGV[2 * i + 1])
    restored = restored + 1
  end
end
if restored > 0 then
  redis.call('SADD', KEYS[1], ARGV[1])
end
return restored
"""


# The epoch: read it, or create it if the registry has none (a new or emptied Redis).
# KEYS[1] = the epoch key; ARGV[1] = a fresh id, used only if there is none.
_EPOCH_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  return current
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


def _number(value: float, what: str) -> str:
    """``value`` as text that Lua's ``tonumber`` and Python's ``float`` read back exactly."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return repr(number)


def _location(url: str) -> str:
    """Where ``url`` points, without its password (error messages reach operators' logs)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 6379}{parts.path or '/0'}"


class RedisRegistry(Registry):
    """A :class:`Registry` on one Redis server (or cluster slot), thread-safe through
    redis-py's connection pool."""

    def __init__(self, url: str, *, prefix: str = "studio") -> None:
        if not prefix or any(c in prefix for c in "{} \t\r\n"):
            raise ValueError(f"registry prefix must be non-empty, without braces or spaces, not {prefix!r}")
        self._where = _location(url)
        self._base = f"{{{prefix}}}:"
        self._known = self._base + "nodes"
        try:
            self._client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                retry=_NO_RETRY,
                # Shown by CLIENT LIST, so an operator can tell the registry's connections apart.
                client_name=f"studio-registry:{prefix}",
            )
        except ValueError as error:  # redis-py's answer to a malformed URL
            raise ConfigError(
                f"STUDIO_REDIS_URL is not a valid Redis URL ({error}); expected e.g. redis://127.0.0.1:6379/0",
                zh=f"STUDIO_REDIS_URL 不是有效的 Redis 地址（{error}），应形如 redis://127.0.0.1:6379/0",
            ) from None
        # Script objects keep the SHA and reload the source when Redis answers NOSCRIPT
        # (after a restart or SCRIPT FLUSH), so no call has to care whether it is cached.
        self._reserve = self._client.register_script(_RESERVE_LUA)
        self._prune = self._client.register_script(_PRUNE_LUA)
        self._epoch = self._client.register_script(_EPOCH_LUA)
        self._restore = self._client.register_script(_RESTORE_LUA)
        self._list = self._client.register_script(_LIST_LUA)

    @property
    def key_prefix(self) -> str:
        """The text every key of this registry starts with, e.g. ``"{studio}:"``."""
        return self._base

    def _state_key(self, node_id: str) -> str:
        return f"{self._base}node:{node_id}"

    def _caps_key(self, node_id: str) -> str:
        return f"{self._base}caps:{node_id}"

    def _res_key(self, node_id: str) -> str:
        return f"{self._base}res:{node_id}"

    def _ended_key(self, node_id: str, prompt_id: str) -> str:
        return f"{self._base}ended:{node_id}:{prompt_id}"

    @contextlib.contextmanager
    def _edge(self, operation: str) -> Iterator[None]:
        """Turn redis-py errors into RegistryError, so callers never see redis types."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as error:
            log.warning("registry %s failed: Redis at %s unreachable: %s", operation, self._where, error)
            raise RegistryError(
                f"The node registry cannot reach Redis at {self._where} ({operation}: {error}). "
                "Check that Redis is running and STUDIO_REDIS_URL is right; the call can be retried.",
                zh=f"节点注册表无法连接 Redis（{self._where}，{operation}：{error}）。"
                "请检查 Redis 是否在运行、STUDIO_REDIS_URL 是否正确；可以重试。",
            ) from None
        except redis.RedisError as error:
            log.error("registry %s failed: Redis at %s answered: %s", operation, self._where, error)
            raise RegistryError(
                f"Redis at {self._where} refused a node-registry command ({operation}: {error}). "
                "Check its logs (memory limit, read-only replica, ACL); the call can be retried.",
                zh=f"Redis（{self._where}）拒绝了节点注册表的命令（{operation}：{error}）。"
                "请检查其日志（内存上限、只读副本、权限）；可以重试。",
            ) from None

    def heartbeat(self, state: NodeState, *, ttl: float = DEFAULT_TTL_SECONDS) -> None:
        if not ttl > 0:
            raise ValueError(f"heartbeat ttl must be positive, not {ttl!r}")
        with self._edge("heartbeat"):
            pipe = self._client.pipeline(transaction=True)
            pipe.set(self._state_key(state.node_id), state.to_json(), px=max(1, round(ttl * 1000)))
            pipe.sadd(self._known, state.node_id)
            pipe.execute()

    def remove(self, node_id: str) -> None:
        with self._edge("remove"):
            self._client.delete(self._state_key(node_id))

    def set_capabilities(self, node_id: str, caps: Capabilities) -> None:
        with self._edge("set_capabilities"):
            self._client.set(self._caps_key(node_id), caps.to_json())

    def capabilities(self, node_id: str) -> Capabilities | None:
        with self._edge("capabilities"):
            raw = self._client.get(self._caps_key(node_id))
        return None if raw is None else Capabilities.from_json(raw)

    def nodes(self) -> list[NodeView]:
        with self._edge("nodes"):
            known = sorted(str(node_id) for node_id in self._client.smembers(self._known))
            if not known:
                return []
            # The set and the listing are two steps: a node added between them appears
            # in the next listing, which is harmless; reserve() is the step that must be atomic.
            replies = self._list(keys=self._pairs(known, with_known=False))
            views: list[NodeView] = []
            stale: list[str] = []
            for node_id, raw, flat in zip(known, replies[0::2], replies[1::2]):
                held = dict(zip(flat[0::2], flat[1::2]))
                if raw is not None:
                    views.append(NodeView(state=NodeState.from_json(raw), reservations=_floats(held)))
                elif not held:
                    stale.append(node_id)
            if stale:
                self._prune(keys=self._pairs(stale, with_known=True), args=stale)
        return views

    def _pairs(self, node_ids: Sequence[str], *, with_known: bool) -> list[str]:
        """KEYS for the scripts: the known set, then state and reservations per node."""
        keys = [self._known] if with_known else []
        for node_id in node_ids:
            keys += [self._state_key(node_id), self._res_key(node_id)]
        return keys

    def reserve(self, candidates: Sequence[Candidate], prompt_id: str, estimate_seconds: float) -> str | None:
        # Sorted by id so the script breaks score ties by order, never by comparing
        # strings in Lua (see reserve.lua).
        ordered = sorted(candidates, key=lambda c: c.node_id)
        args = [prompt_id, _number(estimate_seconds, "estimate_seconds")]
        for candidate in ordered:
            args += [candidate.node_id, _number(candidate.penalty_seconds, "penalty_seconds")]
        with self._edge("reserve"):
            return self._reserve(keys=self._pairs([c.node_id for c in ordered], with_known=True), args=args)

    def release(self, node_id: str, prompt_id: str) -> bool:
        with self._edge("release"):
            return bool(self._client.hdel(self._res_key(node_id), prompt_id))

    def end(self, node_id: str, prompt_id: str, *, remember: float = DEFAULT_ENDED_SECONDS) -> bool:
        if not remember > 0:
            raise ValueError(f"remember must be positive, not {remember!r}")
        with self._edge("end"):
            pipe = self._client.pipeline(transaction=True)
            pipe.set(self._ended_key(node_id, prompt_id), "1", px=max(1, round(remember * 1000)))
            pipe.hdel(self._res_key(node_id), prompt_id)
            return bool(pipe.execute()[1])

    def reservations(self, node_id: str) -> dict[str, float]:
        with self._edge("reservations"):
            return _floats(self._client.hgetall(self._res_key(node_id)))

    def holds(self, node_id: str, prompt_id: str) -> bool:
        with self._edge("holds"):
            return bool(self._client.hexists(self._res_key(node_id), prompt_id))

    def restore(self, node_id: str, reservations: Mapping[str, float]) -> int:
        if not reservations:
            return 0
        keys = [self._known, self._res_key(node_id)]
        args = [node_id]
        for prompt_id, seconds in reservations.items():
            keys.append(self._ended_key(node_id, prompt_id))
            args += [prompt_id, _number(seconds, "reservation seconds")]
        with self._edge("restore"):
            return int(self._restore(keys=keys, args=args))

    def epoch(self) -> str:
        with self._edge("epoch"):
            return str(self._epoch(keys=[self._base + "epoch"], args=[uuid.uuid4().hex]))

    def reserved_nodes(self) -> list[str]:
        with self._edge("reserved_nodes"):
            known = sorted(str(node_id) for node_id in self._client.smembers(self._known))
            pipe = self._client.pipeline(transaction=False)
            for node_id in known:
                pipe.hlen(self._res_key(node_id))
            counts = pipe.execute() if known else []
        return [node_id for node_id, count in zip(known, counts) if count]

    def close(self) -> None:
        with self._edge("close"):
            self._client.close()


def _floats(held: Mapping[Any, Any]) -> dict[str, float]:
    return {str(prompt_id): float(seconds) for prompt_id, seconds in held.items()}
