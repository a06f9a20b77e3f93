"""The job state machine and who may see, cancel and create jobs."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from backend import accounts, jobs
from backend.accounts import ledger
from backend.db import Database
from backend.db.models import Job
from backend.errors import JobStateError, NotFound, PermissionDenied

from .helpers import charged_job, make_user, new_job

STATES = ("queued", "dispatched", "submitted", "running", "succeeded", "failed", "cancelled")

#: Written out from the job states in docs/architecture.md, not copied from the code: the states each state may be
#: entered from. Back to ``queued`` only before the job started; never out of an end.
ENTERED_FROM = {
    "queued": {"dispatched", "submitted"},
    "dispatched": {"queued"},
    "submitted": {"dispatched"},
    "running": {"dispatched", "submitted"},
    "succeeded": {"dispatched", "submitted", "running"},
    "failed": {"queued", "dispatched", "submitted", "running"},
    "cancelled": {"queued", "dispatched", "submitted", "running"},
}
COST = 5


@pytest.mark.parametrize("target", STATES)
def test_each_state_is_entered_only_from_its_expected_states(db: Database, target: str) -> None:
    user = make_user(db, "ann", credits=COST * len(STATES))
    placed = {source: charged_job(db, user, COST).id for source in STATES}
    with db.write() as s:  # put each job in its source state (ends included, refunds not)
        for source, job_id in placed.items():
            s.execute(update(Job).where(Job.id == job_id).values(state=source))
    moved = set()
    for source, job_id in placed.items():
        with db.write() as s:
            if jobs.transition(s, job_id, target):
                moved.add(source)
        assert jobs.get(db, job_id).state == (target if source in moved else source)
    assert moved == ENTERED_FROM[target]
    refunds = len(moved) if target in ("failed", "cancelled") else 0
    with db.read() as s:
        assert ledger.balance(s, user.id) == refunds * COST  # a refund with each move into an end that refunds


def test_a_stale_attempt_number_changes_nothing(db: Database) -> None:
    user = make_user(db, "bea", credits=10)
    job = charged_job(db, user, 3)
    with db.write() as s:
        assert jobs.transition(s, job.id, "dispatched", expect=("queued",), expect_attempts=0, attempts=1)
        assert jobs.transition(s, job.id, "queued")
        assert not jobs.transition(s, job.id, "dispatched", expect=("queued",), expect_attempts=0, attempts=1)
    assert (jobs.get(db, job.id).state, jobs.get(db, job.id).attempts) == ("queued", 1)


def test_someone_elses_job_does_not_exist_for_them(db: Database) -> None:
    owner, other = make_user(db, "cal", credits=10), make_user(db, "dee")
    job = charged_job(db, owner, 3)
    with pytest.raises(NotFound):
        jobs.get(db, job.id, user_id=other.id)
    with pytest.raises(NotFound):
        jobs.cancel(db, job.id, by_user=other.id)
    assert jobs.get(db, job.id, user_id=owner.id).state == "queued"
    assert jobs.list_for_user(db, other.id) == []
    assert jobs.cancel(db, job.id, by_user=None)  # an administrator may
    with pytest.raises(JobStateError):
        jobs.cancel(db, job.id, by_user=owner.id)


def test_a_disabled_account_can_start_no_job(db: Database) -> None:
    user = make_user(db, "eli", credits=10)
    accounts.set_disabled(db, "eli", True)
    with pytest.raises(PermissionDenied, match="disabled"):
        jobs.create(db, new_job(user.id, 3))
    with db.read() as s:
        assert ledger.balance(s, user.id) == 10
    assert jobs.list_for_user(db, user.id) == []
