"""The credits ledger: charges, refunds, idempotency, concurrency and the invariant checker."""

from __future__ import annotations

import dataclasses
import multiprocessing
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from backend import jobs
from backend.accounts import ledger
from backend.db import Database
from backend.db.models import Job, LedgerEntry, User
from backend.errors import InsufficientCredits, InvalidParameter, JobStateError

from .helpers import charged_job, make_user, new_job
from .workers import submit_jobs


def balance_of(db: Database, user_id: int) -> int:
    with db.read() as s:
        return ledger.balance(s, user_id)


def test_charge_debits_and_records_the_job(db: Database) -> None:
    user = make_user(db, "ann", credits=10)
    job = charged_job(db, user, 3)
    assert balance_of(db, user.id) == 7
    with db.read() as s:
        (entry,) = [e for e in ledger.entries(s, user.id) if e.kind == "charge"]
    assert (entry.amount, entry.job_id, entry.balance_after) == (-3, job.id, 7)
    assert ledger.verify(db) == []


def test_a_charge_changes_the_balance_and_nothing_else_of_the_user(db: Database) -> None:
    # The charge's statements are built once and run with bound values; a value named after
    # a column of users would quietly join the UPDATE's SET clause.
    user = make_user(db, "ann", credits=10)
    with db.read() as s:
        before = s.execute(select(User.__table__).where(User.id == user.id)).mappings().one()
    charged_job(db, user, 3)
    with db.read() as s:
        after = s.execute(select(User.__table__).where(User.id == user.id)).mappings().one()
    assert {k: v for k, v in after.items() if after[k] != before[k]} == {"balance": 7}


def test_a_balance_can_be_spent_to_exactly_zero(db: Database) -> None:
    user = make_user(db, "ava", credits=10)
    charged_job(db, user, 10)
    assert balance_of(db, user.id) == 0
    charged_job(db, user, 0)  # a free job needs no credits
    with pytest.raises(InsufficientCredits, match="costs 1 credits but your balance is 0"):
        jobs.create(db, new_job(user.id, 1))
    assert ledger.verify(db) == []


def test_insufficient_credits_stores_nothing(db: Database) -> None:
    user = make_user(db, "ben", credits=2)
    with pytest.raises(InsufficientCredits, match="costs 3 credits but your balance is 2") as err:
        jobs.create(db, new_job(user.id, 3))
    assert "余额为 2" in err.value.zh
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
    assert balance_of(db, user.id) == 2


def test_replayed_idempotency_key_charges_once(db: Database) -> None:
    user = make_user(db, "cat", credits=10)
    first, created = jobs.create(db, new_job(user.id, 4, key="req-1"))
    again, created_again = jobs.create(db, new_job(user.id, 4, key="req-1"))
    assert created and not created_again and again.id == first.id
    assert balance_of(db, user.id) == 6
    with pytest.raises(InvalidParameter, match="another request"):
        jobs.create(db, new_job(user.id, 4, key="req-1", workflow="txt2img-sd15"))


def test_a_key_reused_for_other_parameters_is_refused_and_charges_nothing(db: Database) -> None:
    user = make_user(db, "cub", credits=10)
    asked = jobs.request_hash("invert-scale", {"scale": 2.0, "seed": -1})
    first, _ = jobs.create(db, dataclasses.replace(new_job(user.id, 4, key="req-2"), request_hash=asked))
    assert jobs.request_hash("invert-scale", {"seed": -1, "scale": 2.0}) == asked, "the order of params is no difference"
    other = dataclasses.replace(new_job(user.id, 4, key="req-2"), request_hash=jobs.request_hash("invert-scale", {"scale": 3.0}))
    with pytest.raises(InvalidParameter, match="another request") as caught:
        jobs.create(db, other)
    assert caught.value.param == "idempotency_key"
    again, created = jobs.create(db, dataclasses.replace(new_job(user.id, 4, key="req-2"), request_hash=asked))
    assert not created and again.id == first.id
    assert balance_of(db, user.id) == 6


def test_concurrent_replays_of_one_key_charge_once(db: Database) -> None:
    user = make_user(db, "cid", credits=100)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: jobs.create(db, new_job(user.id, 5, key="same")), range(8)))
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert balance_of(db, user.id) == 95
    assert ledger.verify(db) == []


def test_concurrent_charges_in_threads_never_overdraw(db: Database) -> None:
    user = make_user(db, "dan", credits=100)
    cost, attempts = 7, 40  # 280 credits asked of 100

    def attempt(_: int) -> bool:
        try:
            jobs.create(db, new_job(user.id, cost))
            return True
        except InsufficientCredits:
            return False

    with ThreadPoolExecutor(8) as pool:
        accepted = sum(pool.map(attempt, range(attempts)))
    assert accepted == 100 // cost
    assert balance_of(db, user.id) == 100 - accepted * cost
    assert ledger.verify(db) == []


def test_concurrent_charges_from_several_processes_never_overdraw(db: Database) -> None:
    user = make_user(db, "eve", credits=50)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Manager().Event()
    with ctx.Pool(4) as pool:
        pending = [pool.apply_async(submit_jobs, (db.url, user.id, 3, 10, start)) for _ in range(4)]
        start.set()
        accepted = sum(p.get(timeout=120) for p in pending)
    assert accepted == 50 // 3
    assert balance_of(db, user.id) == 50 - accepted * 3
    assert ledger.verify(db) == []


def test_ten_concurrent_failures_refund_once(db: Database) -> None:
    user = make_user(db, "fay", credits=20)
    job = charged_job(db, user, 8)
    barrier = threading.Barrier(10)

    def fail(_: int) -> bool:
        barrier.wait()
        return jobs.fail(db, job.id, error_type="RuntimeError", message="boom")

    with ThreadPoolExecutor(10) as pool:
        moved = list(pool.map(fail, range(10)))
    assert moved.count(True) == 1
    assert balance_of(db, user.id) == 20
    assert ledger.verify(db) == []


def test_direct_refunds_race_on_the_unique_constraint(db: Database) -> None:
    user = make_user(db, "gus", credits=20)
    job = charged_job(db, user, 8)
    barrier = threading.Barrier(10)

    def refund(_: int) -> int:
        barrier.wait()
        with db.write() as s:
            return ledger.refund(s, job.id)

    with ThreadPoolExecutor(10) as pool:
        amounts = list(pool.map(refund, range(10)))
    assert sorted(amounts) == [0] * 9 + [8]
    assert balance_of(db, user.id) == 20


def test_success_keeps_the_charge_and_cancel_refunds(db: Database) -> None:
    user = make_user(db, "hal", credits=20)
    done, cancelled = charged_job(db, user, 5), charged_job(db, user, 5)
    with db.write() as s:
        assert jobs.transition(s, done.id, "dispatched")
        assert not jobs.transition(s, done.id, "dispatched")  # a duplicate changes nothing
    assert jobs.succeed(db, done.id)
    assert not jobs.fail(db, done.id, error_type="X", message="late")  # finished jobs stay finished
    assert jobs.cancel(db, cancelled.id, by_user=user.id)
    with pytest.raises(JobStateError):
        jobs.cancel(db, cancelled.id, by_user=user.id)
    assert balance_of(db, user.id) == 15
    assert ledger.verify(db) == []


def test_grants_and_adjustments(db: Database) -> None:
    user = make_user(db, "ida")
    with db.write() as s:
        ledger.credit(s, user.id, 30, kind="grant", actor="root")
        ledger.credit(s, user.id, -10, kind="adjust", note="typo")
    with pytest.raises(InsufficientCredits), db.write() as s:
        ledger.credit(s, user.id, -21, kind="adjust")
    with pytest.raises(InvalidParameter), db.write() as s:
        ledger.credit(s, user.id, -5, kind="grant")
    assert balance_of(db, user.id) == 20
    with db.write() as s:
        ledger.credit(s, user.id, -20, kind="adjust", note="to exactly zero")
    assert balance_of(db, user.id) == 0
    assert ledger.verify(db) == []


def test_verify_reports_a_hand_corrupted_ledger(db: Database) -> None:
    user = make_user(db, "jon", credits=10)
    job = charged_job(db, user, 4)
    assert ledger.verify(db) == []
    with db.write() as s:
        s.execute(update(User).where(User.id == user.id).values(balance=999))
    problems = [str(p) for p in ledger.verify(db)]
    assert any("balance 999 but ledger sums to 6" in p for p in problems)

    with db.write() as s:
        s.execute(update(User).where(User.id == user.id).values(balance=6))
        s.execute(update(LedgerEntry).where(LedgerEntry.job_id == job.id).values(amount=-1))
    problems = [str(p) for p in ledger.verify(db)]
    assert any(f"job {job.id}: charged 1 but costs 4" in p for p in problems)


def test_the_database_refuses_a_negative_balance(db: Database) -> None:
    user = make_user(db, "neg", credits=1)
    with pytest.raises(IntegrityError), db.write() as s:
        s.execute(update(User).where(User.id == user.id).values(balance=-1))


def test_verify_reports_a_failed_job_without_refund(db: Database) -> None:
    user = make_user(db, "kim", credits=10)
    job = charged_job(db, user, 4)
    with db.write() as s:  # bypass transition(): the state changes, the refund does not happen
        s.execute(text("UPDATE jobs SET state = 'failed' WHERE id = :id"), {"id": job.id})
    assert any("is failed and its entries sum to -4, expected 0" in str(p) for p in ledger.verify(db))


def _corrupt_running_sum(db: Database, user: User, job: Job) -> str:
    with db.write() as s:
        entry = s.scalar(select(LedgerEntry).where(LedgerEntry.job_id == job.id))
        entry.balance_after += 1
        return f"ledger row {entry.id}: balance_after 3 but the running sum is 2"


def _corrupt_job_without_charge(db: Database, user: User, job: Job) -> str:
    with db.write() as s:
        s.add(Job(id="f" * 32, user_id=user.id, workflow="w", params={}, inputs={}, idempotency_key="k", cost=2))
    return f"job {'f' * 32}: has no charge"


def _corrupt_foreign_row(db: Database, user: User, job: Job) -> str:
    with db.write() as s:  # a grant booked against a job
        s.add(LedgerEntry(user_id=user.id, kind="grant", amount=1, balance_after=3, job_id=job.id))
        s.execute(update(User).where(User.id == user.id).values(balance=3))
    return f"job {job.id}: has ledger rows other than charge and refund"


def _corrupt_refunded_success(db: Database, user: User, job: Job) -> str:
    with db.write() as s:
        assert jobs.transition(s, job.id, "dispatched")
    assert jobs.succeed(db, job.id)
    with db.write() as s:  # bypass transition(): a refund for a job that succeeded
        ledger.refund(s, job.id)
    return f"job {job.id}: is succeeded and its entries sum to 0, expected -4"


@pytest.mark.parametrize(
    "corrupt",
    [_corrupt_running_sum, _corrupt_job_without_charge, _corrupt_foreign_row,
     _corrupt_refunded_success],
    ids=lambda f: f.__name__.removeprefix("_corrupt_"),
)
def test_verify_names_each_broken_invariant(db: Database, corrupt) -> None:  # type: ignore[no-untyped-def]
    user = make_user(db, "max", credits=6)
    job = charged_job(db, user, 4)
    assert ledger.verify(db) == []
    expected = corrupt(db, user, job)
    assert expected in [str(p) for p in ledger.verify(db)]


def test_job_ids_are_not_guessable(db: Database) -> None:
    user = make_user(db, "lee", credits=10)
    job = charged_job(db, user, 1)
    assert len(job.id) == 32 and uuid.UUID(job.id).version == 4
