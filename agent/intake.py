"""Intake: a job message off the bus becomes a prompt on ComfyUI.

Runs on the bus's consumer thread, one delivery at a time: reservation check, idempotency
check (a redelivery of a prompt already followed or already on ComfyUI is confirmed, never
submitted again), uploads, ``POST /prompt``, ``submitted``, ack. The delivery is acked as
soon as ComfyUI accepted the prompt and ``submitted`` is confirmed, not at the end of the
job: a GPU job can outlast RabbitMQ's consumer timeout, and from then on the job is
followed through ComfyUI, not through the bus.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from backend.errors import StudioError, Unavailable
from backend.jobs.messages import JobMessage
from backend.ports.bus import Delivery

from .comfy import ComfyClient
from .config import AgentConfig
from .errors import ComfyUnavailable, PromptRejected, UploadFailed
from .followed import LOST_MESSAGE, Followed
from .publishing import Publisher
from .recovery import Recovery
from .reservations import Reservations
from .translate import stage_fields
from .uploads import Uploader, rename_inputs

log = logging.getLogger("agent.intake.Intake")


class Intake:
    """Takes one node's job deliveries and submits their prompts."""

    def __init__(self, config: AgentConfig, *, client: ComfyClient, uploader: Uploader, followed: Followed,
                 publisher: Publisher, recovery: Recovery, reservations: Reservations,
                 session: Callable[[], str | None], on_unreachable: Callable[[], None], stop: threading.Event) -> None:
        self._config = config
        self._node = config.node_id
        self._client = client
        self._uploader = uploader
        self._followed = followed
        self._publish = publisher
        self._recovery = recovery
        self._reservations = reservations
        self._session = session
        self._on_unreachable = on_unreachable
        self._stop = stop

    def handle_delivery(self, delivery: Delivery) -> None:
        """Run one job message; settle the delivery exactly once."""
        message: JobMessage = delivery.body  # type: ignore[assignment]
        job_id, prompt_id = message["job_id"], message["prompt_id"]
        followed = self._followed
        try:
            # Reservations are keyed by prompt id (job and attempt), as the dispatcher makes them.
            held = self._reservations.slot_held(prompt_id)
            if held is None:  # stopping before the registry could be believed again
                delivery.reject(requeue=True)
                return
            if not held:
                # The backend moved or cancelled it; running it here would run it twice.
                log.info("job_id=%s node_id=%s no longer holds a slot here; dropped", job_id, self._node)
                delivery.ack()
                return
            with followed.lock:  # held so the job loop cannot report on an adopted job first
                known = prompt_id in followed.jobs or self._recovery.adopt_if_known(message)
                if known:
                    followed.journal_write(followed.jobs[prompt_id])
                    # Redelivered after it was submitted: confirm again (the first confirm
                    # may be what got lost), never submit again.
                    self._publish.lifecycle("submitted", message, prompt_id=prompt_id)
            if known:
                delivery.ack()
                return
            if message.get("adopt_only"):
                self._settle_missing(message)
                delivery.ack()
                return
            renames = self._uploader.ensure(message["uploads"], job_id=job_id)
            prompt = rename_inputs(message["prompt"], renames)
            with followed.lock:
                if followed.taken(prompt_id):
                    # This agent ended the prompt already (e.g. recovery found the journaled
                    # copy of a run killed before its POST missing from ComfyUI and sent it
                    # back to the backlog), or recovery adopted it while we uploaded: the
                    # backend may have given the job to another node meanwhile.
                    log.info("job_id=%s node_id=%s ended or followed here already; dropped", job_id, self._node)
                    delivery.ack()
                    return
                self._submit(message, prompt)
                self._publish.lifecycle("submitted", message, prompt_id=prompt_id)
            delivery.ack()
        except PromptRejected as exc:
            log.warning("job_id=%s node_id=%s ComfyUI refused the prompt: %s", job_id, self._node, exc)
            self._publish.lifecycle_safely(
                "failed", message, error_type="ValidationError", message=str(exc), **stage_fields(message["stages"], exc.graph_node)
            )
            delivery.ack()
        except UploadFailed as exc:
            log.error("job_id=%s node_id=%s %s", job_id, self._node, exc)
            self._publish.lifecycle_safely("failed", message, error_type="InputMissing", message=str(exc), **stage_fields({}, None))
            delivery.ack()
        except ComfyUnavailable as exc:
            log.warning("job_id=%s node_id=%s ComfyUI unreachable before submission (%s); requeued", job_id, self._node, exc)
            self._on_unreachable()
            # Bounded pause so a dead ComfyUI does not turn into a tight redelivery loop
            # before the supervisor stops consuming.
            self._stop.wait(self._config.reconnect_min)
            delivery.reject(requeue=True)
        except Unavailable as exc:  # registry or bus trouble: nothing is lost, try again
            log.warning("job_id=%s node_id=%s cannot take the job now (%s); requeued", job_id, self._node, exc)
            self._stop.wait(self._config.reconnect_min)
            delivery.reject(requeue=True)
        except StudioError as exc:  # the job itself cannot run here; trying again changes nothing
            log.error("job_id=%s node_id=%s cannot run the job: %s", job_id, self._node, exc)
            self._publish.lifecycle_safely("failed", message, error_type=type(exc).__name__, message=str(exc), **stage_fields({}, None))
            delivery.ack()

    def _settle_missing(self, message: JobMessage) -> None:
        """An adopt-only message (the backend has the job on this node, submitted or
        running) for a prompt neither followed here nor known to ComfyUI: ComfyUI lost it.
        It is never submitted again (it may have run): failed if it had started, else
        back to the backlog."""
        job_id = message["job_id"]
        with self._followed.lock:
            self._followed.ended(message["prompt_id"])
        if message.get("started"):
            log.warning("job_id=%s node_id=%s %s", job_id, self._node, LOST_MESSAGE)
            self._publish.lifecycle("failed", message, error_type="Lost", message=LOST_MESSAGE, **stage_fields({}, None))
        else:
            log.warning("job_id=%s node_id=%s not on ComfyUI and never started; requeue", job_id, self._node)
            self._publish.lifecycle("requeue", message, reason=LOST_MESSAGE)

    def _submit(self, message: JobMessage, prompt: dict[str, Any]) -> None:
        followed = self._followed
        client_id = self._session()
        job = followed.new_job(message, client_id)
        followed.jobs[job.prompt_id] = job
        followed.journal_write(job)  # before the prompt exists: a crash after the POST is adopted
        followed.report()  # before the prompt exists too: the sweeper never sees it unfollowed
        try:
            answer = self._client.submit(prompt, prompt_id=job.prompt_id, client_id=client_id)
        except StudioError:
            del followed.jobs[job.prompt_id]
            followed.journal.remove(job.prompt_id)
            followed.report()
            raise
        if answer.get("node_errors"):
            # Some output nodes failed validation and will silently not run.
            log.warning("job_id=%s node_id=%s some outputs will not run: %s", job.job_id, self._node, answer["node_errors"])
        log.info("job_id=%s node_id=%s submitted as %s", job.job_id, self._node, job.prompt_id)
