"""Webhooks: a job may name a URL that is told when it ends (docs/api.md).

When the job succeeds, fails (and is refunded) or is cancelled, :class:`Deliverer`
POSTs its record (:func:`backend.jobs.payload.job_payload`) as JSON, signed::

    X-Studio-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

A 2xx answer delivers it. A 5xx, a timeout or a refused connection is tried again after
``webhook_retry_seconds``, doubling each time, until ``webhook_give_up_seconds`` after
the job ended; any other answer (4xx, a redirect) gives up at once. Every attempt is a
``webhook_attempts`` row its owner can read.

A webhook is not a way into the operator's network: its host must resolve only to
public addresses, or to networks in ``webhook_allow_networks``; this is checked when
the job is submitted and again before each attempt (DNS may change), redirects are not
followed, and the answer's body is never read. Each attempt resolves the host once and
connects to the very address it checked (:func:`pin`), sending the name as ``Host`` and,
over HTTPS, as the TLS server name (SNI and the certificate check): a name whose DNS
answer changes between the check and the connection (DNS rebinding) cannot steer the
POST to a loopback or private address.

Deliveries are claimed with a conditional UPDATE of ``next_at``, so several workers
(replicas) may run deliverers against one database: each attempt is made once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.config import Settings
from backend.db import Database, rows_changed
from backend.db.api_models import JobWebhook, WebhookAttempt
from backend.db.models import Job, utcnow
from backend.errors import InvalidParameter, StudioError, Unavailable
from backend.jobs.payload import job_payload
from backend.jobs.state import TERMINAL
from backend.jobs.queries import job_card

log = logging.getLogger(__name__)

MAX_URL = 2000
SIGNATURE_HEADER = "X-Studio-Signature"
#: How long one deliverer holds a claimed delivery before another may take it over.
LEASE = dt.timedelta(minutes=2)
#: Deliveries tried per pass.
BATCH = 20

#: DNS: the addresses of a host and port (``socket.getaddrinfo``'s, injectable for tests).
Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Attempt:
    at: dt.datetime
    status: int | None
    error: str | None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Studio-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance`` s old
    (what a receiver does; docs/api.md shows it)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), f"t={timestamp},v1={parts.get('v1', '')}".encode())


def _refused(message: str, zh: str) -> InvalidParameter:
    return InvalidParameter(message, zh=zh, param="webhook_url")


@dataclass(frozen=True)
class Target:
    """Where one attempt goes: ``url``'s host, checked, pinned to one of its addresses."""

    scheme: str
    host: str
    port: int
    #: The request target: path and query.
    path: str
    #: The checked address the connection is made to.
    address: str

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def check_url(settings: Settings, url: str, *, resolve: Resolver | None = None) -> str:
    """``url`` if webhooks are configured and it may be called; InvalidParameter otherwise."""
    pin(settings, url, resolve=resolve)
    return url


def pin(settings: Settings, url: str, *, resolve: Resolver | None = None) -> Target:
    """Resolve ``url``'s host once and check every address it has; the :class:`Target`
    to connect to (InvalidParameter if webhooks are off or any address is refused)."""
    if not settings.webhook_secret:
        raise _refused("Webhooks are not enabled on this studio (the operator sets webhook_secret).",
                       "本工作室未启用 Webhook（需由运维设置 webhook_secret）。")
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        raise _refused("A webhook URL is an http(s) URL without user info, at most 2000 characters.",
                       "Webhook 地址须为不含用户信息的 http(s) 地址，最长 2000 个字符。")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _refused("The webhook URL's port is not a number.", "Webhook 地址的端口无效。") from None
    try:
        addresses = (resolve or _resolve)(parts.hostname, port)
    except OSError:
        raise _refused(f"The webhook host {parts.hostname} does not resolve.", f"无法解析 Webhook 主机 {parts.hostname}。") from None
    if not addresses:
        raise _refused(f"The webhook host {parts.hostname} does not resolve.", f"无法解析 Webhook 主机 {parts.hostname}。")
    allowed = [ipaddress.ip_network(n, strict=False) for n in settings.webhook_allow_networks]
    for raw in addresses:
        ip = ipaddress.ip_address(raw.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global and not any(ip in net for net in allowed if net.version == ip.version):
            raise _refused(f"The webhook host {parts.hostname} is a private or local address ({ip}); "
                           "the operator may allow its network (webhook_allow_networks).",
                           f"Webhook 主机 {parts.hostname} 是私有或本地地址（{ip}），需运维在 webhook_allow_networks 中允许。")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=parts.scheme, host=parts.hostname, port=port, path=path,
                  address=addresses[0].split("%", 1)[0])


def _resolve(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def attach(s: Session, job_id: str, url: str) -> None:
    """Remember ``url`` (checked with :func:`check_url`) for the end of ``job_id``, in the
    transaction that makes the job."""
    if s.get(JobWebhook, job_id) is None:
        s.add(JobWebhook(job_id=job_id, url=url, state="pending", attempts=0, next_at=utcnow()))


def attempts(db: Database, job_id: str) -> list[Attempt]:
    with db.read() as s:
        rows = s.scalars(select(WebhookAttempt).where(WebhookAttempt.job_id == job_id).order_by(WebhookAttempt.id))
        return [Attempt(at=r.at, status=r.status, error=r.error) for r in rows]


def webhook_of(db: Database, job_id: str) -> tuple[str, str] | None:
    """``(url, state)`` of a job's webhook, or None."""
    with db.read() as s:
        row = s.get(JobWebhook, job_id)
        return (row.url, row.state) if row is not None else None


def post(target: Target, body: bytes, headers: dict[str, str], *, timeout: float) -> int:
    """POST ``body`` to ``target``'s pinned address; the answer's status (its body unread).

    No proxy (one from the environment must not carry webhooks elsewhere), no redirect,
    no retry here: the deliverer decides. Raises ``urllib3.exceptions.HTTPError``.
    """
    limit = urllib3.Timeout(connect=timeout, read=timeout)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(target.address, target.port, timeout=limit, retries=False, maxsize=1,
                                           server_hostname=target.host, assert_hostname=target.host,
                                           cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=limit, retries=False, maxsize=1)
    try:
        answer = pool.urlopen("POST", target.path, body=body, headers={**headers, "Host": target.host_header},
                              redirect=False, preload_content=False, assert_same_host=False)
        try:
            return answer.status
        finally:
            answer.close()
    finally:
        pool.close()


class Deliverer:
    """Posts due webhooks; :meth:`run` loops until stopped (a thread of the worker)."""

    def __init__(self, db: Database, settings: Settings, *, interval: float = 1.0,
                 resolve: Resolver | None = None) -> None:
        self.db = db
        self.settings = settings
        self.interval = interval
        self.resolve = resolve

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Unavailable as exc:
                log.warning("webhooks: %s; trying again", exc)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad delivery
                log.exception("webhook pass failed")
            stop.wait(self.interval)

    def run_once(self, now: dt.datetime | None = None) -> int:
        """Try every due delivery once; how many were tried."""
        now = now or utcnow()
        with self.db.read() as s:
            due = s.execute(select(JobWebhook.job_id, JobWebhook.next_at).join(Job, Job.id == JobWebhook.job_id)
                            .where(JobWebhook.state == "pending", JobWebhook.next_at <= now,
                                   Job.state.in_(TERMINAL))
                            .order_by(JobWebhook.next_at).limit(BATCH)).all()
        tried = 0
        for job_id, next_at in due:
            with self.db.write() as s:
                claimed = rows_changed(s.execute(
                    update(JobWebhook).where(JobWebhook.job_id == job_id, JobWebhook.next_at == next_at,
                                             JobWebhook.state == "pending").values(next_at=now + LEASE))) == 1
            if claimed:
                self._deliver(job_id, now)
                tried += 1
        return tried

    def _deliver(self, job_id: str, now: dt.datetime) -> None:
        with self.db.read() as s:
            hook = s.get(JobWebhook, job_id)
        if hook is None:  # claimed a moment ago: only a deleted job takes it away
            return
        card = job_card(self.db, job_id)
        job = card.job
        body = json.dumps({"event": "job.ended", "job": job_payload(card)},
                          separators=(",", ":"), ensure_ascii=False).encode()
        status: int | None = None
        error: str | None = None
        retry = False
        try:
            target = pin(self.settings, hook.url, resolve=self.resolve)
            timestamp = int(time.time())
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.settings.webhook_secret, timestamp, body),
                       "User-Agent": "AIGC-Studio-Webhook/1", "X-Studio-Job": job_id}
            status = post(target, body, headers, timeout=self.settings.webhook_timeout_seconds)
            retry = status >= 500
        except StudioError as exc:  # the target is no longer allowed: no retry helps
            error = exc.message
        except urllib3.exceptions.TimeoutError:
            error, retry = "timed out", True
        except urllib3.exceptions.HTTPError as exc:
            error, retry = f"connection failed: {type(exc).__name__}", True
        ended = job.finished_at or now
        count = hook.attempts + 1
        delay = dt.timedelta(seconds=self.settings.webhook_retry_seconds * 2 ** (count - 1))
        if status is not None and 200 <= status < 300:
            state, next_at = "delivered", now
        elif retry and (now + delay) - ended <= dt.timedelta(seconds=self.settings.webhook_give_up_seconds):
            state, next_at = "pending", now + delay
        else:
            state, next_at = "gave_up", now
        with self.db.write() as s:
            s.add(WebhookAttempt(job_id=job_id, at=now, status=status, error=(error or None) and error[:255]))
            s.execute(update(JobWebhook).where(JobWebhook.job_id == job_id)
                      .values(state=state, attempts=count, next_at=next_at))
        log.info("job_id=%s node_id=- webhook attempt %d to %s: %s → %s", job_id, count, urlsplit(hook.url).hostname,
                 status if status is not None else error, state)
