"""The sweeper: settles what crashes and lost messages leave behind.

Each pass, from the database (the truth) and the registry (live state):

- a job on a node that is gone goes back to the backlog if it had not started, and
  fails with a refund if it had. When a node counts as gone depends on what is known
  about its ComfyUI (see :class:`SweepPolicy`): reported offline by its agent (ComfyUI
  down) or missing from a registry that lost its data, after ``offline_grace``; its
  agent silent (heartbeat expired, capabilities still there: the agent crashed, hangs
  or is cut off from the servers, while its ComfyUI may well go on running the jobs)
  only after ``agent_lost_after``, so that an agent that returns adopts its jobs
  instead of the GPU doing them twice;
- a job ``dispatched`` for too long without a ``submitted`` event is republished (the
  agent recognises a duplicate by its prompt id), and failed after too many attempts;
- a job ``submitted`` or ``running`` that the node's online agent does not follow (it
  lists what it follows in its state) is republished for adoption only: the agent picks
  it up from ComfyUI's queue or history, or reports it lost, and never runs it again.
  That is how events lost with an in-process bus (a restarted embedded studio) or a
  journal lost with a host's disk are recovered;
- a job running far beyond its estimate is failed;
- reservations are made to match the jobs on each node: missing ones (the registry
  lost its data) are restored, leftovers of finished jobs are released.

Every pass tolerates a service being away (``Unavailable``): it logs and tries again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from backend import jobs
from backend.jobs import store
from backend.db.models import Job, utcnow
from backend.jobs.dispatcher import job_message
from backend.errors import StudioError, Unavailable
from backend.accounts.ledger import refunded
from backend.jobs.messages import failure_reason, prompt_id_of, user_event
from backend.runtime import Backend
from backend.jobs.state import ON_NODE, JobState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPolicy:
    #: A node reported offline (ComfyUI down), or missing from a registry that lost its
    #: data (Redis restarted empty), for this long loses its jobs.
    offline_grace: float = 10.0
    #: A node whose agent went silent (heartbeat expired, capabilities still in the
    #: registry) keeps its jobs this long: its ComfyUI may still be running them, and an
    #: agent back within this time adopts them (each runs once). Longer means jobs of a
    #: host that really died wait longer before they move; shorter means a slow restart
    #: or a network cut may let the GPU run a job twice (docs/agent.md).
    agent_lost_after: float = 120.0
    #: A dispatched job without a ``submitted`` event after this long is republished.
    republish_after: float = 15.0
    #: Dispatch attempts before a job that never reaches ComfyUI is failed.
    max_attempts: int = 5
    #: A running job is failed after ``max(min_run_timeout, factor × estimate)`` seconds.
    run_timeout_factor: float = 20.0
    min_run_timeout: float = 1800.0
    #: A submitted or running job its online agent has not listed as followed for this
    #: long is republished for adoption (see the module docstring).
    adopt_after: float = 30.0


class Sweeper:
    def __init__(
        self,
        backend: Backend,
        *,
        policy: SweepPolicy = SweepPolicy(),
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.policy = policy
        self.on_change = on_change
        self._clock = clock
        self._offline_since: dict[str, float] = {}
        #: Since when each node that holds jobs has been missing from the registry, and how
        #: long it may stay missing before it counts as gone (see sweep_once).
        self._missing_since: dict[str, tuple[float, float]] = {}
        #: Since when each (node, prompt_id) of a job on an online node was not followed by
        #: its agent (see _adopt_unfollowed).
        self._unfollowed_since: dict[tuple[str, str], float] = {}
        #: Reservations seen without a matching active job on the previous pass; released
        #: only when seen twice, so a dispatch between its reserve and its commit is spared.
        self._suspects: set[tuple[str, str]] = set()

    def run(self, stop: threading.Event, interval: float = 2.0) -> None:
        while not stop.wait(interval):
            try:
                self.sweep_once()
            except Unavailable as exc:  # the database or the registry is away: next pass
                log.warning("sweep failed: %s", exc)
            except StudioError as exc:
                log.error("sweep failed: %s", exc)
            except Exception:
                log.exception("sweep crashed")

    def sweep_once(self) -> None:
        backend, policy = self.backend, self.policy
        now_mono = self._clock()
        views = {v.state.node_id: v for v in backend.registry.nodes()}
        for node, view in views.items():
            if view.state.online:
                self._offline_since.pop(node, None)
            else:
                self._offline_since.setdefault(node, now_mono)

        with backend.db.read() as s:
            active = list(s.scalars(select(Job).where(Job.state.in_(ON_NODE))))
        # A node missing from the registry whose capabilities are still there stopped its
        # heartbeat: its agent crashed, hangs or lost the servers, while its ComfyUI may go
        # on running the jobs; they wait for the agent to come back and adopt them, up to
        # agent_lost_after. A node whose capabilities are gone as well means the registry
        # lost its data (Redis restarted empty): every agent registers again with its next
        # heartbeat, so such a node is lost only once it stayed away for the grace period.
        # Taking either for the loss of the node would requeue jobs whose prompts are still
        # queued in their ComfyUI, and they would run twice.
        missing = {job.node_id for job in active if job.node_id is not None and job.node_id not in views}
        self._missing_since = {node: t for node, t in self._missing_since.items() if node in missing}
        for node in sorted(missing - set(self._missing_since)):
            if backend.registry.capabilities(node) is None:
                self._missing_since[node] = (now_mono, policy.offline_grace)
            else:
                self._missing_since[node] = (now_mono, policy.agent_lost_after)
                held = sum(1 for job in active if job.node_id == node)
                log.warning("node_id=%s agent silent: its %d job(s) wait up to %.0f s for it to come back "
                            "(its ComfyUI may still run them)", node, held, policy.agent_lost_after)

        def gone(node: str) -> bool:
            if node in views:
                return now_mono - self._offline_since.get(node, now_mono) >= policy.offline_grace
            since, allowed = self._missing_since[node]
            return now_mono - since >= allowed

        lost = {job.node_id for job in active if job.node_id is not None and gone(job.node_id)}
        if lost:
            # A pass can take a while on a busy host: look again before acting, so a node
            # whose agent came back meanwhile keeps its jobs (requeueing a job its ComfyUI
            # still has queued could run it twice).
            lost -= {v.state.node_id for v in backend.registry.nodes() if v.state.online}
        changed = False
        now = utcnow()
        online = {node for node, view in views.items() if view.state.online}
        for job in active:
            if job.node_id is None or job.node_id in lost:
                changed |= self._node_lost(job)
            elif job.node_id not in online:
                continue  # waiting for its node to come back (or to count as gone)
            elif job.state == JobState.DISPATCHED and _age(job.updated_at, now) > policy.republish_after:
                # updated_at: when it was dispatched or last republished
                changed |= self._republish(job)
            elif job.state == JobState.RUNNING and _age(job.started_at, now) > max(
                policy.min_run_timeout, policy.run_timeout_factor * job.estimate_seconds
            ):
                changed |= self._fail(job, "Timeout", "the job ran far longer than predicted and was stopped")
        self._adopt_unfollowed(active, views, now_mono)
        self._reconcile_reservations(views)
        if changed:
            self.on_change()

    def _adopt_unfollowed(self, active: list[Job], views: dict, now_mono: float) -> None:  # type: ignore[type-arg]
        """Republish, for adoption only, submitted or running jobs that their node's
        online agent has not listed as followed for ``adopt_after`` seconds."""
        unfollowed: dict[tuple[str, str], float] = {}
        for job in active:
            view = views.get(job.node_id or "")
            if job.state not in (JobState.SUBMITTED, JobState.RUNNING) or view is None or not view.state.online:
                continue
            if view.state.following is None:  # an agent that does not say (older version)
                continue
            prompt_id = prompt_id_of(job.id, job.attempts)
            if prompt_id in view.state.following:
                continue
            key = (view.state.node_id, prompt_id)
            since = unfollowed[key] = self._unfollowed_since.get(key, now_mono)
            if now_mono - since >= self.policy.adopt_after:
                self._republish(job, adopt=True)
                unfollowed[key] = now_mono  # the next try only after another interval
        self._unfollowed_since = unfollowed

    # Each action below is conditional on the attempt and node of the copy this pass read:
    # meanwhile the job may have been put back in the backlog and dispatched again, and
    # acting on the new attempt for the old one's reasons would run it twice or fail it.

    def _node_lost(self, job: Job) -> bool:
        if job.state == JobState.RUNNING:
            return self._fail(job, "NodeLost", "the node running this job went offline")
        with self.backend.db.write() as s:
            moved = jobs.advance(s, job.id, JobState.QUEUED, attempt=job.attempts, node_id=job.node_id,
                                 expect=(JobState.DISPATCHED, JobState.SUBMITTED)) is not None
        if moved:
            log.info("job_id=%s node_id=%s node lost before the job started; back to the backlog", job.id, job.node_id)
        if job.node_id:
            self.backend.registry.release(job.node_id, prompt_id_of(job.id, job.attempts))
        return moved

    def _fail(self, job: Job, error_type: str, message: str) -> bool:
        moved = jobs.fail(self.backend.db, job.id, error_type=error_type, message=message, expect=(JobState(job.state),),
                          of_attempt=(job.attempts, job.node_id))
        if job.node_id:
            self.backend.registry.release(job.node_id, prompt_id_of(job.id, job.attempts))
        if moved:
            log.warning("job_id=%s node_id=%s failed: %s", job.id, job.node_id, message)
            event = user_event(
                "failed", job.id, reason=failure_reason(None, error_type, message), refunded=refunded(self.backend.db, job.id)
            )
            try:
                self.backend.bus.publish_user_event(job.user_id, event)
            except StudioError as exc:
                log.warning("job_id=%s node_id=%s user event not sent: %s", job.id, job.node_id, exc)
        return moved

    def _republish(self, job: Job, *, adopt: bool = False) -> bool:
        """Send a job's message to its node again. ``adopt``: the job reached ComfyUI
        already (submitted or running), so the agent may only follow or settle it."""
        if not adopt and job.attempts >= self.policy.max_attempts:
            return self._fail(job, "Undeliverable", f"no node took the job after {job.attempts} attempts")
        assert job.node_id is not None
        backend = self.backend
        if not adopt:
            # Claim the attempt as it still is (and restart the clock for the next
            # republish) before giving it a slot: republishing an old attempt ran jobs twice.
            with backend.db.write() as s:
                claimed = store.claim_republish(s, job.id, job.attempts, job.node_id)
            if not claimed:
                log.info("job_id=%s node_id=%s attempt %d moved on before its republish; left alone",
                         job.id, job.node_id, job.attempts)
                return False
        prompt_id = prompt_id_of(job.id, job.attempts)
        if not backend.registry.holds(job.node_id, prompt_id):
            backend.registry.restore(job.node_id, {prompt_id: job.estimate_seconds})
        spec = backend.library.get(job.workflow)
        message = job_message(backend, spec, job, job.attempts)
        if adopt:
            message = {**message, "adopt_only": True, "started": job.state == JobState.RUNNING}
        backend.bus.publish_job(job.node_id, message)
        if adopt:
            log.warning("job_id=%s node_id=%s %s on the node but not followed by its agent; sent again for adoption",
                        job.id, job.node_id, job.state)
            return False
        log.info("job_id=%s node_id=%s republished attempt %d", job.id, job.node_id, job.attempts)
        return False

    def restore_reservations(self) -> int:
        """Restore the reservations of every job the database has on a node and the
        registry lost; the number restored. The worker calls this before its first
        dispatch pass, so a restarted studio never books a node's slots twice."""
        return self._reconcile_reservations({}, release=False)

    def _reconcile_reservations(self, views: dict, *, release: bool = True) -> int:  # type: ignore[type-arg]
        backend = self.backend
        registry = backend.registry
        expected = self._expected_reservations()
        suspects: set[tuple[str, str]] = set()
        missing: dict[str, dict[str, float]] = {}
        for node in set(registry.reserved_nodes()) | set(expected) | set(views):
            held = registry.reservations(node)
            lost = {j: e for j, e in expected.get(node, {}).items() if j not in held}
            if lost:
                missing[node] = lost
            if not release:
                continue
            for prompt_id in set(held) - set(expected.get(node, {})):
                if (node, prompt_id) in self._suspects:
                    log.info("prompt_id=%s node_id=%s releasing a leftover reservation", prompt_id, node)
                    registry.release(node, prompt_id)
                else:
                    suspects.add((node, prompt_id))
        if release:
            self._suspects = suspects
        if not missing:
            return 0
        # A job may have ended between the first read of the database and the read of
        # the registry, and its slot been released: only a prompt_id whose job is still on
        # its node in a second read, made after the registry said it was missing, was
        # really lost. Restoring the others would hold a slot nobody uses, and could hide a
        # cancellation from the agent until the slot is released again as a leftover. A
        # job whose node reported its end is freed before the database says so (the
        # lifecycle consumer's Registry.end), and the registry itself refuses to restore
        # those for a while.
        still = self._expected_reservations()
        restored = 0
        for node, lost in missing.items():
            lost = {j: e for j, e in lost.items() if j in still.get(node, {})}
            if lost:
                back = registry.restore(node, lost)
                if back:
                    log.warning("node_id=%s: restored %d lost reservation(s)", node, back)
                restored += back
        return restored

    def _expected_reservations(self) -> dict[str, dict[str, float]]:
        """node -> prompt_id -> estimate, for every job holding a node in the database."""
        with self.backend.db.read() as s:
            rows = s.execute(
                select(Job.id, Job.attempts, Job.node_id, Job.estimate_seconds).where(
                    Job.state.in_(ON_NODE), Job.node_id.is_not(None)
                )
            )
            expected: dict[str, dict[str, float]] = {}
            for job_id, attempt, node, estimate in rows:
                expected.setdefault(str(node), {})[prompt_id_of(job_id, attempt)] = estimate  # node_id IS NOT NULL
        return expected


def _age(moment: dt.datetime | None, now: dt.datetime) -> float:
    return (now - moment).total_seconds() if moment is not None else 0.0
