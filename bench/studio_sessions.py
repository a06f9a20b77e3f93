"""Benchmark 5 — studio: N concurrent browser sessions each watching a job.

Starts the real entry point (``python run_studio.py``, embedded mode: SQLite, in-process
bus, simulated nodes with their agents as threads) as a subprocess, signs N users up
through ``POST /signup`` (the welcome grant pays for their job), gives each user one
txt2img job, and opens N sessions that watch their job exactly the way the browser does:
Gradio's queue protocol with the user's ``studio_session`` cookie — ``POST
/studio/gradio_api/queue/join`` for the Create page's watch event (``to_watch.change`` →
``Watcher.watch``) and the ``GET /studio/gradio_api/queue/data`` SSE stream, one thread
per session.

Jobs are inserted by this process into the studio's database (``backend.jobs.create``,
priced like ``submit`` prices them; the studio's dispatcher picks them up from the
database) because the Create button lives inside a ``gr.render`` block that only a real
browser drives. Everything on the event path — agent → bus → Feed → Watcher → Gradio
queue → SSE — is the studio's own.

Phases: (1) comfysim hangs in KSampler, so no job ends; once every session has its first
card, the studio process's RSS (VmRSS of it and its children, sampled every 0.25 s for a
few seconds) is the memory figure. (2) The hang is released and every job runs to its end;
the event-to-browser latency of each session is the time from the job's state change as
stamped by the backend (``started_at`` when the agent reports it running, ``finished_at``
when the backend records its end; wall clock, same machine) to this client receiving the
first streamed card with that state (``data-state`` of the progress card).

    python -m bench studio [--sessions 200] [--nodes 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.studio_process import start_studio, stop_studio

from . import common
from .common import mark, ms

WORKFLOW = "txt2img-sd15"
TARGET_MB = 600
TARGET_P99 = 0.250
PASSWORD = "bench password 1"
ADMIN_PASSWORD = "bench operator password"


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                try:
                    with open(f"/proc/{p}/task/{task}/children") as f:
                        todo += [int(c) for c in f.read().split()]
                except OSError:
                    pass
        except OSError:
            pass
    return total


def sign_up(url: str, name: str) -> str:
    """A new user through the sign-up form; returns the session cookie's value."""
    s = requests.Session()
    r = s.post(url + "/signup", data={"name": name, "password": PASSWORD, "password2": PASSWORD},
               allow_redirects=False, timeout=60)
    token = s.cookies.get("studio_session")
    if not token:
        raise RuntimeError(f"sign-up of {name} failed: {r.status_code} {r.text[:300]}")
    return token


def event_ids(url: str, cookie: str) -> tuple[int, int]:
    """The Create page's load event (it puts the user's active job into the ``to_watch``
    state) and its watch event (the ``change`` of that state, whose outputs start with
    the progress card), from Gradio's config."""
    cfg = requests.get(url + "/studio/config", headers={"Cookie": f"studio_session={cookie}"}, timeout=30).json()
    by_id = {c["id"]: c for c in cfg["components"]}
    load = watch = None
    for i, dep in enumerate(cfg["dependencies"]):
        outs = dep.get("outputs") or []
        kinds = {t[1] for t in dep.get("targets") or []}
        progress = [o for o in outs if by_id.get(o, {}).get("props", {}).get("elem_id") == "progress"]
        if progress and outs[0] == progress[0] and "change" in kinds and len(outs) == 3:
            watch = dep.get("id", i)
        elif progress and "load" in kinds and load is None:
            load = dep.get("id", i)
    if load is None or watch is None:
        raise RuntimeError(f"the load/watch events are not in the Gradio config ({load}, {watch})")
    return load, watch


def insert_jobs(data_dir: Path, user_names: list[str]) -> dict[str, str]:
    """One queued txt2img job per user, stored and charged like ``submit`` does; the
    studio's dispatcher picks them up from the shared SQLite database."""
    from backend import jobs
    from backend.config import Settings
    from backend.db import Database
    from backend.db.models import User
    from backend.workflows import Library, quote, validate_params

    settings = Settings(data_dir=data_dir)
    db = Database(settings.effective_database_url)
    spec = Library.load(settings.workflows_dir).get(WORKFLOW)
    values = validate_params(spec, {"prompt": "a lighthouse at dusk"}, expert=False)
    priced = quote(spec, values, {})
    out: dict[str, str] = {}
    try:
        with db.read() as s:
            ids = {u.name: u.id for u in s.query(User).filter(User.name.in_(user_names))}
        for name in user_names:
            job, _ = jobs.create(db, jobs.NewJob(user_id=ids[name], workflow=spec.name, params=values, inputs={},
                                                 cost=priced.cost, idempotency_key=uuid.uuid4().hex,
                                                 memory_mb=priced.memory_mb, estimate_seconds=priced.seconds))
            out[name] = job.id
    finally:
        db.dispose()
    return out


def job_stamps(data_dir: Path, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    from backend.config import Settings
    from backend.db import Database
    from backend.db.models import Job

    db = Database(Settings(data_dir=data_dir).effective_database_url)

    def epoch(t: dt.datetime | None) -> float | None:
        if t is None:
            return None
        return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()

    try:
        with db.read() as s:
            return {j.id: {"state": j.state, "running": epoch(j.started_at), "ended": epoch(j.finished_at)}
                    for j in s.query(Job).filter(Job.id.in_(job_ids))}
    finally:
        db.dispose()


@dataclass
class Session:
    name: str
    cookie: str
    job_id: str
    first_card: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    seen: dict[str, float] = field(default_factory=dict)  # card state -> wall time first received
    updates: int = 0
    error: str | None = None


STATE = re.compile(r'data-state="([a-z]+)"')


def _join(http: requests.Session, url: str, fn_index: int, data: list[Any], session_hash: str) -> None:
    r = http.post(url + "/studio/gradio_api/queue/join",
                  json={"data": data, "event_data": None, "fn_index": fn_index, "trigger_id": None,
                        "session_hash": session_hash}, timeout=60)
    r.raise_for_status()


def _messages(http: requests.Session, url: str, session_hash: str, timeout: float) -> Any:
    with http.get(url + "/studio/gradio_api/queue/data", params={"session_hash": session_hash}, stream=True,
                  timeout=(30, timeout)) as stream:
        for raw in stream.iter_lines(decode_unicode=True):
            now = time.time()
            if raw and raw.startswith("data:"):
                yield now, json.loads(raw[5:])


def watch(url: str, events: tuple[int, int], sess: Session, timeout: float) -> None:
    """One browser session opening the Create page: the load event (which finds the
    user's active job and sets the ``to_watch`` state), then the watch event that this
    state change triggers, read from the SSE stream as the browser reads it."""
    load, watch_fn = events
    session_hash = uuid.uuid4().hex[:11]
    http = requests.Session()
    http.headers["Cookie"] = f"studio_session={sess.cookie}"
    try:
        _join(http, url, load, [], session_hash)
        for _now, msg in _messages(http, url, session_hash, 60):
            if msg.get("msg") == "process_completed":
                if not msg.get("success", True):
                    raise RuntimeError(f"load failed: {str(msg)[:300]}")
                break
        _join(http, url, watch_fn, [None], session_hash)  # a State input: the server holds its value
        for now, msg in _messages(http, url, session_hash, timeout):
            kind = msg.get("msg")
            if kind in ("process_generating", "process_completed"):
                data = (msg.get("output") or {}).get("data") or []
                card = data[0] if data and isinstance(data[0], str) else ""
                m = STATE.search(card)
                if m:
                    sess.updates += 1
                    sess.seen.setdefault(m.group(1), now)
                    sess.first_card.set()
                if kind == "process_completed":
                    if not msg.get("success", True):
                        sess.error = f"event failed: {str(msg)[:300]}"
                    return
            elif kind == "unexpected_error":
                sess.error = str(msg)[:300]
                return
    except Exception as exc:  # noqa: BLE001 - reported per session
        sess.error = f"{type(exc).__name__}: {exc}"
    finally:
        sess.first_card.set()
        sess.done.set()


def run(sessions: int, nodes: int, *, settle: float = 5.0, end_timeout: float = 150.0) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="studio-bench-sessions-"))
    studio = start_studio(root / "data", log_path=root / "studio.log", nodes=nodes, timeout=120.0, env=dict(
        STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD, STUDIO_WELCOME_CREDITS="1000",
        STUDIO_SIGNUPS_PER_ADDRESS="100000"))  # every simulated user signs up from 127.0.0.1
    threads: list[threading.Thread] = []
    try:
        base_rss = rss_bytes(studio.process.pid)
        studio.faults(hang_in_node="KSampler")
        t = time.monotonic()
        names = [f"bench{i:04d}" for i in range(sessions)]
        cookies: dict[str, str] = {}
        lock = threading.Lock()

        def signup_some(chunk: list[str]) -> None:
            for n in chunk:
                c = sign_up(studio.url, n)
                with lock:
                    cookies[n] = c

        workers = [threading.Thread(target=signup_some, args=(names[i::8],)) for i in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        signup_s = time.monotonic() - t
        events = event_ids(studio.url, cookies[names[0]])
        job_ids = insert_jobs(studio.data_dir, names)
        idle_rss = rss_bytes(studio.process.pid)

        sess = [Session(n, cookies[n], job_ids[n]) for n in names]
        t = time.monotonic()
        for s in sess:
            th = threading.Thread(target=watch, args=(studio.url, events, s, end_timeout), daemon=True)
            th.start()
            threads.append(th)
        first_deadline = time.monotonic() + 60
        for s in sess:
            s.first_card.wait(max(0.0, first_deadline - time.monotonic()))
        connect_s = time.monotonic() - t
        watching = sum(1 for s in sess if s.updates and not s.done.is_set())
        # Memory while every session watches (no job can end: KSampler hangs).
        samples, until = [], time.monotonic() + settle
        while time.monotonic() < until:
            samples.append(rss_bytes(studio.process.pid))
            time.sleep(0.25)
        still = sum(1 for s in sess if not s.done.is_set())
        # Release: every job runs to its end; each session sees "running" then "succeeded".
        t = time.monotonic()
        released = time.time()
        studio.reset_faults()
        for s in sess:
            s.done.wait(max(1.0, end_timeout - (time.monotonic() - t)))
        drain_s = time.monotonic() - t
        peak_rss = max(samples + [rss_bytes(studio.process.pid)])
        stamps = job_stamps(studio.data_dir, list(job_ids.values()))
    finally:
        try:
            studio.reset_faults()
        except requests.RequestException:
            pass
        stop_studio(studio)
        for th in threads:
            th.join(5)
        shutil.rmtree(root, ignore_errors=True)

    end_lat, run_lat, errors, states = [], [], [], {}
    for s in sess:
        st = stamps.get(s.job_id, {})
        states[st.get("state")] = states.get(st.get("state"), 0) + 1
        if s.error:
            errors.append(s.error)
        final = st.get("state")
        if final in s.seen and st.get("ended"):
            end_lat.append(s.seen[final] - st["ended"])
        if "running" in s.seen and st.get("running") and st["running"] > released:
            run_lat.append(s.seen["running"] - st["running"])
    return {
        "sessions": sessions, "nodes": nodes, "watching": watching, "still": still,
        "base_rss": base_rss, "idle_rss": idle_rss, "watch_rss": max(samples), "watch_rss_median": sorted(samples)[len(samples) // 2],
        "peak_rss": peak_rss, "end": end_lat, "running": run_lat, "errors": errors, "states": states,
        "signup_s": signup_s, "connect_s": connect_s, "drain_s": drain_s,
        "updates": sum(s.updates for s in sess),
    }


def mb(b: float) -> str:
    return f"{b / 2**20:.0f} MB"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench studio", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=4, help="simulated nodes in the studio process")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of RSS sampling while all watch")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    common.quiet_logs()

    started = time.monotonic()
    r = run(args.sessions, args.nodes, settle=args.settle)
    took = time.monotonic() - started
    all_lat = r["end"] + r["running"]
    p = common.percentile
    print(f"{r['sessions']} sessions, {r['watching']} watching at once, "
          f"{len(r['errors'])} errors; job states {r['states']}", flush=True)
    print(f"studio RSS: {mb(r['base_rss'])} started, {mb(r['idle_rss'])} after sign-ups, "
          f"{mb(r['watch_rss'])} max while all watch, {mb(r['peak_rss'])} peak", flush=True)
    print(f"event→browser, job ended: p50 {ms(p(r['end'], 50))}, p99 {ms(p(r['end'], 99))} (n={len(r['end'])}); "
          f"job running: p50 {ms(p(r['running'], 50))}, p99 {ms(p(r['running'], 99))} (n={len(r['running'])}); "
          f"{took:.0f} s", flush=True)
    for e in r["errors"][:5]:
        print("error:", e, flush=True)
    rows = [
        ["studio process RSS while all sessions watch (max of samples)", mb(r["watch_rss"]), f"≤ {TARGET_MB} MB",
         mark(r["watch_rss"] <= TARGET_MB * 2**20)],
        ["event → browser, p99 (job running + job ended cards)", ms(p(all_lat, 99)), "≤ 250 ms",
         mark(bool(all_lat) and p(all_lat, 99) <= TARGET_P99)],
        ["event → browser, p50 (same samples)", ms(p(all_lat, 50)), "—", ""],
        ["job ended → final card, p50 / p99", f"{ms(p(r['end'], 50))} / {ms(p(r['end'], 99))}", "—", ""],
        ["job running → first running card, p50 / p99",
         f"{ms(p(r['running'], 50))} / {ms(p(r['running'], 99))}", "—", ""],
        ["sessions watching at once (first card received, stream open)", str(r["watching"]), str(r["sessions"]),
         mark(r["watching"] == r["sessions"])],
        ["RSS at start / after sign-ups / peak", f"{mb(r['base_rss'])} / {mb(r['idle_rss'])} / {mb(r['peak_rss'])}",
         "—", ""],
        ["session errors; jobs by final state", f"{len(r['errors'])}; {r['states']}", "0", mark(not r["errors"])],
        ["sign-ups / all sessions' first card / all jobs ended after release",
         f"{r['signup_s']:.1f} s / {r['connect_s']:.1f} s / {r['drain_s']:.1f} s", "—", ""],
    ]
    out = common.table(["figure", "measured", "target", ""], rows)
    print(out)
    if not args.no_write:
        cmd = "python -m bench studio" + ("" if argv is None or not argv else " " + " ".join(argv))
        common.write_section("studio", f"""## 5. Studio sessions

`{cmd.strip()}` — `run_studio.py` as a subprocess in embedded mode (SQLite, in-process bus,
{r['nodes']} simulated nodes with their agents as threads); {r['sessions']} users signed up through
`POST /signup`, one `{WORKFLOW}` job each (stored and charged by this process through
`backend.jobs.create`, dispatched by the studio); one thread per session watching its job through
Gradio's queue protocol with the session cookie (`/studio/gradio_api/queue/join` for the Create
page's watch event, then the `queue/data` SSE stream), as the browser does. Memory: VmRSS of the
studio process (and any children) sampled every 0.25 s for {args.settle:.0f} s while every session
watches and comfysim hangs in KSampler, so no job ends. Latency: after the hang is released, the
time from the backend's stamp of a state change (`started_at` when the job runs, `finished_at`
when it ends; wall clock, same machine) to the client receiving the first card with that
`data-state`; the Watcher coalesces progress into ≥ 150 ms gaps, and these two transitions are
the events the card carries a comparable timestamp for. Whole run {took:.0f} s. {common.machine()}.

{out}
""")
    return r


if __name__ == "__main__":
    main()
