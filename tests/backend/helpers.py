"""Small builders shared by backend tests (real code paths, cheap password hashing)."""

from __future__ import annotations

import uuid

from argon2 import PasswordHasher

from backend import accounts, jobs
from backend.db import Database
from backend.db.models import Job, User

#: Argon2id with tiny costs: tests create many users and must stay fast.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"


def make_user(db: Database, name: str, credits: int = 0, *, role: str = "creator") -> User:
    return accounts.create_user(db, name, PASSWORD, role=role, welcome_credits=credits, hasher=CHEAP_HASHER)


def new_job(user_id: int, cost: int, *, key: str | None = None, workflow: str = "invert-scale") -> jobs.NewJob:
    return jobs.NewJob(
        user_id=user_id,
        workflow=workflow,
        params={"scale": 2.0},
        inputs={},
        cost=cost,
        idempotency_key=key or uuid.uuid4().hex,
    )


def charged_job(db: Database, user: User, cost: int) -> Job:
    job, created = jobs.create(db, new_job(user.id, cost))
    assert created
    return job
