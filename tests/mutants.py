"""Mutation spot-checks: plant a one-token bug, run the tests that must catch it, restore.

Each :class:`Plant` weakens one rule that guards money, access or a state change. The
check passes when the named tests FAIL with the plant in place (the bug is caught) and the
file is restored afterwards, whatever happens. docs/testing.md keeps the table.

    .venv/bin/python -m tests.mutants            # every plant
    .venv/bin/python -m tests.mutants debit      # plants whose name contains "debit"

Plants edit the working tree: run it on a clean checkout, not while editing the files.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plant:
    name: str
    path: str
    #: Text that occurs exactly once in ``path``, and what it becomes.
    old: str
    new: str
    #: pytest node ids or ``-k`` free arguments; at least one test must fail.
    tests: tuple[str, ...]


DISPATCH = "tests/backend/test_dispatch.py"
LEDGER = "tests/backend/test_ledger.py"
JOBS = "tests/backend/test_jobs.py"
LIFECYCLE = "tests/backend/test_lifecycle.py"
REGISTRY = "tests/contract/test_registry_contract.py"
CODES = "tests/backend/test_codes.py"
AUTH = "tests/studio/test_auth_and_files.py"
ADMIN = "tests/studio/test_admin_and_account.py"

PLANTS: tuple[Plant, ...] = (
    # ---- money ---------------------------------------------------------------------------
    Plant("debit: an exact balance is refused", "backend/accounts/ledger.py",
          '_users.c.balance >= bindparam("cost")', '_users.c.balance > bindparam("cost")', (LEDGER,)),
    Plant("credit: an adjustment to exactly zero is refused", "backend/accounts/ledger.py",
          "User.balance + amount >= 0", "User.balance + amount > 0", (LEDGER,)),
    Plant("refund: a transition that did not move refunds anyway", "backend/jobs/store.py",
          "if moved and to in REFUNDED", "if to in REFUNDED", (LEDGER, JOBS)),
    Plant("refund: cancelling keeps the charge", "backend/jobs/state.py",
          'REFUNDED: tuple[JobState, ...] = (JobState.FAILED, JobState.CANCELLED)',
          'REFUNDED: tuple[JobState, ...] = (JobState.FAILED,)', (LEDGER,)),
    Plant("verify: running balances are not checked", "backend/accounts/ledger.py",
          "running[user_id] = running.get(user_id, 0) + amount", "running[user_id] = after", (LEDGER,)),
    Plant("verify: a job without a charge is not named", "backend/accounts/ledger.py",
          "if not charges:", "if charges == 0:", (LEDGER,)),
    Plant("verify: foreign rows on a job are not named", "backend/accounts/ledger.py",
          "            if foreign:", "            if foreign and False:", (LEDGER,)),
    Plant("verify: a refunded success passes", "backend/accounts/ledger.py",
          "expected = 0 if state in REFUNDED else -cost", "expected = total", (LEDGER,)),
    Plant("codes: a used code redeems again", "backend/accounts/codes.py",
          "RedeemCode.redeemed_by.is_(None),", "", (CODES,)),
    Plant("codes: an expired code redeems", "backend/accounts/codes.py",
          "(RedeemCode.expires_at > now)", "(RedeemCode.expires_at != now)", (CODES,)),
    Plant("codes: one more wrong guess than allowed", "backend/accounts/codes.py",
          "throttle.Limit(max_failures, window", "throttle.Limit(max_failures + 1, window", (CODES,)),
    Plant("codes: a batch worth nothing", "backend/accounts/codes.py", "if credits <= 0:", "if credits < 0:", (CODES,)),
    Plant("formulas: '|', '&' and '>>' in the language", "backend/formulas.py",
          'ast.Pow: "**"}', 'ast.Pow: "**", ast.BitOr: "|", ast.BitAnd: "&", ast.RShift: ">>"}',
          ("tests/backend/test_formulas.py",)),
    # ---- access --------------------------------------------------------------------------
    Plant("jobs: anyone reads any job", "backend/jobs/store.py",
          "job.user_id != user_id)", "job.user_id != job.user_id)", (JOBS,)),
    Plant("jobs: anyone cancels any job", "backend/jobs/store.py",
          "job.user_id != by_user)", "job.user_id != job.user_id)", (JOBS,)),
    Plant("jobs: a disabled account starts jobs", "backend/accounts/ledger.py",
          '_users.c.balance >= bindparam("cost"),\n                 _users.c.disabled.is_not(True))',
          '_users.c.balance >= bindparam("cost"))', (JOBS,)),
    Plant("accounts: a disabled account signs in", "backend/accounts/users.py",
          "    if user.disabled:\n        raise AuthError", "    if False:\n        raise AuthError",
          ("tests/backend/test_accounts.py",)),
    Plant("sessions: a disabled account's session still resolves", "backend/accounts/sessions.py",
          "not row.disabled and row.expires_at", "row.expires_at", (AUTH,)),
    Plant("sessions: an expired session still resolves", "backend/accounts/sessions.py",
          "not row.disabled and row.expires_at > utcnow()", "not row.disabled", (AUTH,)),
    Plant("sessions: the purge removes live sessions", "backend/accounts/sessions.py",
          "StudioSession.expires_at <= utcnow()", "StudioSession.expires_at >= utcnow()", (AUTH,)),
    Plant("sessions: disabling leaves the cached session valid", "studio/pages/admin.py",
          "studio.sessions.revoke_user(target.id)", "pass", (ADMIN,)),
    Plant("pages: a disabled account's page requests pass", "backend/accounts/sessions.py",
          "    if user.disabled:\n        raise PermissionDenied", "    if False:\n        raise PermissionDenied", (ADMIN,)),
    Plant("pages: admin handlers serve creators", "studio/context.py",
          "if not user.is_admin:", "if user.is_admin and False:", ("tests/studio/test_pages.py",)),
    Plant("files: anyone sees any preview", "studio/files.py",
          "studio.feed.preview_owner(asset_id) == user.id or", "studio.feed.preview_owner(asset_id) is not None or",
          (AUTH,)),
    Plant("assets: anyone reads any asset", "backend/assets/records.py",
          "return s.get(AssetOwner, (asset_id, user_id)) is not None", "return s.get(Asset, asset_id) is not None",
          ("tests/backend/test_assets.py",)),
    Plant("assets: anyone opens any asset", "backend/assets/records.py",
          "if owner is not None or (is_admin", "if True or (is_admin", ("tests/backend/test_assets.py",)),
    Plant("sign-up: invite mode needs no invite", "backend/accounts/signin.py",
          '    if mode == "invite":\n        codes.check_invite', '    if False:\n        codes.check_invite', (AUTH, ADMIN)),
    Plant("sign-up: closed sign-up is open", "backend/accounts/signin.py", 'if mode == "off":', 'if mode == "closed":', (AUTH,)),
    # ---- state changes -------------------------------------------------------------------
    Plant("transition: a running job goes back to the backlog", "backend/jobs/state.py",
          "JobState.QUEUED: (JobState.DISPATCHED, JobState.SUBMITTED),",
          "JobState.QUEUED: (JobState.DISPATCHED, JobState.SUBMITTED, JobState.RUNNING),", (JOBS,)),
    Plant("transition: a queued job starts running without a node", "backend/jobs/state.py",
          "JobState.RUNNING: (JobState.DISPATCHED, JobState.SUBMITTED),",
          "JobState.RUNNING: (JobState.QUEUED, JobState.DISPATCHED, JobState.SUBMITTED),", (JOBS,)),
    Plant("transition: a failed (refunded) job succeeds", "backend/jobs/state.py",
          "JobState.SUCCEEDED: (JobState.DISPATCHED, JobState.SUBMITTED, JobState.RUNNING),",
          "JobState.SUCCEEDED: (JobState.DISPATCHED, JobState.SUBMITTED, JobState.RUNNING, JobState.FAILED),", (JOBS,)),
    Plant("transition: a stale attempt number moves the job", "backend/jobs/store.py",
          "Job.attempts == expect_attempts", "Job.attempts >= expect_attempts", (JOBS,)),
    Plant("lifecycle: events of an older attempt are applied", "backend/jobs/store.py",
          "[Job.attempts == attempt, Job.node_id == node_id]", "[Job.attempts <= attempt, Job.node_id == node_id]",
          (DISPATCH,)),
    Plant("lifecycle: events of another node are applied", "backend/jobs/store.py",
          "[Job.attempts == attempt, Job.node_id == node_id]", "[Job.attempts == attempt]", (DISPATCH,)),
    Plant("lifecycle: a finished job keeps its slot", "backend/jobs/lifecycle.py",
          "                self.backend.registry.end(node_id, prompt_id_of(job_id, attempt))",
          "                pass", (DISPATCH, LIFECYCLE)),
    Plant("lifecycle: the slot is not freed before the database write", "backend/jobs/lifecycle.py",
          "                    self._free(event)\n            writes.append((write, event, freed_at))",
          "                    pass\n            writes.append((write, event, freed_at))", (LIFECYCLE,)),
    Plant("lifecycle: an end is stamped when it is written, after the next dispatch", "backend/jobs/lifecycle.py",
          "progress=1.0, finished_at=_ended(event, freed_at))", "progress=1.0)", (LIFECYCLE,)),
    Plant("lifecycle: an end waits for the events before it to free its slot", "backend/jobs/lifecycle.py",
          "                if self._free(body):\n", "                if False:\n", (LIFECYCLE,)),
    Plant("lifecycle: every job's events wait in one applier's line", "backend/jobs/lifecycle.py",
          "self._inboxes[self._applier_of(body)].put(delivery)", "self._inboxes[0].put(delivery)", (LIFECYCLE,)),
    Plant("lifecycle: a late end is stamped when it arrives, not when the node ended it", "backend/jobs/lifecycle.py",
          "progress=1.0, finished_at=_ended(event, freed_at))", "progress=1.0, finished_at=freed_at)", (LIFECYCLE,)),
    Plant("lifecycle: a node's clock is believed before the job's start", "backend/jobs/lifecycle.py",
          "    return case((Job.started_at > on_node, Job.started_at),",
          "    return on_node\n    case((Job.started_at > on_node, Job.started_at),", (LIFECYCLE,)),
    Plant("registry: a slot the node said ended is restored", "backend/ports/memory_registry.py",
          "if self._ended.get((node_id, prompt_id), now) <= now}", "}", (LIFECYCLE, REGISTRY)),
    Plant("cancel: a cancelled job keeps its slot", "backend/jobs/submit.py",
          "        backend.registry.release(job.node_id, prompt_id_of(job.id, job.attempts))\n", "", (DISPATCH,)),
    Plant("sweeper: an over-long job is never failed (Timeout)", "backend/jobs/sweeper.py",
          'elif job.state == JobState.RUNNING and', 'elif job.state == "never" and', (DISPATCH,)),
    Plant("sweeper: the run limit ignores the estimate", "backend/jobs/sweeper.py", "> max(\n", "> min(\n", (DISPATCH,)),
    Plant("sweeper: a dispatch nobody takes is republished forever", "backend/jobs/sweeper.py",
          "and job.attempts >= self.policy.max_attempts:", "and False:", (DISPATCH,)),
    Plant("sweeper: one attempt more than allowed", "backend/jobs/sweeper.py",
          "and job.attempts >= self.policy.max_attempts:", "and job.attempts > self.policy.max_attempts:", (DISPATCH,)),
    Plant("sweeper: an offline node keeps its jobs past the grace period", "backend/jobs/sweeper.py",
          "self._offline_since.get(node, now_mono) >= policy.offline_grace",
          "self._offline_since.get(node, now_mono) > policy.offline_grace", (DISPATCH,)),
    Plant("sweeper: a lost node's started job is requeued (runs twice)", "backend/jobs/sweeper.py",
          '        if job.state == JobState.RUNNING:\n            return self._fail(job, "NodeLost"',
          '        if job.state == "started":\n            return self._fail(job, "NodeLost"', (DISPATCH,)),
    Plant("sweeper: a lost node's waiting job is failed", "backend/jobs/sweeper.py",
          "moved = jobs.advance(s, job.id, JobState.QUEUED, attempt=job.attempts, node_id=job.node_id,",
          "moved = jobs.advance(s, job.id, JobState.FAILED, attempt=job.attempts, node_id=job.node_id,",
          (DISPATCH,)),
    Plant("sweeper: a stale copy's attempt is republished", "backend/jobs/store.py",
          "Job.state == JobState.DISPATCHED.value, Job.attempts == attempt,", "Job.state == JobState.DISPATCHED.value,",
          (DISPATCH,)),
    Plant("dispatcher: a failed publish requeues a dispatch the sweeper republished", "backend/jobs/store.py",
          "[Job.attempts == attempt, Job.updated_at == stamped]", "[Job.attempts == attempt]",
          (DISPATCH,)),
    Plant("agent: a copy of a prompt it ended is submitted again", "agent/intake.py",
          "if followed.taken(prompt_id):", "if prompt_id in followed.jobs:",
          ("tests/agent/test_recovery.py",)),
    Plant("sweeper: lost reservations are not restored", "backend/jobs/sweeper.py",
          "                back = registry.restore(node, lost)", "                back = 0", (DISPATCH,)),
    Plant("stage aliases: an admin's override never reaches a job", "backend/jobs/dispatcher.py",
          'result[row.graph_node_id] = {"en": row.en, "zh": row.zh}', "pass", ("tests/studio/test_pages.py",)),
    Plant("stage aliases: the Admin page ignores an override", "backend/jobs/stages.py",
          'result[row.graph_node_id] = {"en": row.en, "zh": row.zh}', "pass", ("tests/studio/test_pages.py",)),
    # ---- the suite itself ------------------------------------------------------------------
    Plant("CI: a skipped test passes", "tests/conftest.py",
          "if not (services.IN_CI and report.skipped)", "if not (False and report.skipped)",
          ("tests/test_ci_skips.py",)),
    # ---- comfysim ------------------------------------------------------------------------
    Plant("comfysim: /free does not clear the cache", "comfysim/executor.py",
          "self.cache.clear()", "self.cache.copy()", ("tests/comfysim/test_queue_and_interrupt.py",)),
    Plant("comfysim: /free is ignored", "comfysim/server.py",
          "self.node.queue.set_flag(flag, body[flag])", "pass", ("tests/comfysim/test_queue_and_interrupt.py",)),
    Plant("comfysim: a rejected prompt is announced on the websocket", "comfysim/server.py",
          "        if not result.ok:\n",
          '        if not result.ok:\n            node.hub.send("status", {"status": {"exec_info": {"queue_remaining": 0}}})\n',
          ("tests/comfysim/test_validation.py",)),
    # ---- state changes: dispatch ------------------------------------------------------
    Plant("dispatch: a pass that lost a job does not run again", "backend/jobs/dispatcher.py",
          "self._lost_race = True\n", "pass\n", (DISPATCH,)),
    Plant("dispatch: a stale copy may reuse an attempt", "backend/jobs/store.py",
          "tuple_(Job.id, Job.attempts).in_([(job_id, attempts) for job_id, attempts, _ in placements])",
          "Job.attempts.is_not(None)", (DISPATCH,)),
)


def run(plant: Plant) -> str | None:
    """The first test that caught the plant, or None if it survived."""
    path = ROOT / plant.path
    original = path.read_text()
    if original.count(plant.old) != 1:
        raise SystemExit(f"{plant.name}: {plant.old!r} occurs {original.count(plant.old)} times in {plant.path}")
    try:
        path.write_text(original.replace(plant.old, plant.new))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *plant.tests],
            cwd=ROOT, capture_output=True, text=True,
        )
    finally:
        path.write_text(original)
    if result.returncode not in (0, 1):  # 2-5: pytest could not run them (a plant that does not compile?)
        raise SystemExit(f"{plant.name}: pytest exited with {result.returncode}:\n{result.stdout[-2000:]}")
    if result.returncode == 0:
        return None
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in result.stdout.splitlines()
              if line.startswith(("FAILED ", "ERROR "))]
    return failed[0] if failed else "?"


def main(argv: list[str]) -> int:
    chosen = [p for p in PLANTS if not argv or any(word in p.name for word in argv)]
    survived = []
    for plant in chosen:
        caught = run(plant)
        print(f"{'caught  ' if caught else 'SURVIVED'} {plant.name}" + (f"  <- {caught}" if caught else ""), flush=True)
        if not caught:
            survived.append(plant.name)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} plants caught")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
