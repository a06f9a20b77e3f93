"""The API's request and response models (they make the OpenAPI document)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field


class Texts(BaseModel):
    en: str
    zh: str


class ParamOut(BaseModel):
    name: str
    type: str
    label: Texts
    help: Texts | None = None
    level: str
    required: bool
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: list[str] = []
    max_length: int | None = None


class PresetOut(BaseModel):
    name: str
    label: Texts
    default: str
    options: list[str]


class WorkflowSummary(BaseModel):
    name: str
    title: Texts
    description: Texts
    category: str


class WorkflowOut(WorkflowSummary):
    params: list[ParamOut]
    presets: list[PresetOut]
    outputs: list[str] = Field(description="The kinds of the outputs: image, video, audio")


class WorkflowList(BaseModel):
    workflows: list[WorkflowSummary]


class QuoteIn(BaseModel):
    workflow: str
    params: dict[str, Any] = {}
    expert: bool = Field(True, description="Allow expert-level parameters (the API default)")


class QuoteOut(BaseModel):
    workflow: str
    cost: int = Field(description="Credits the job would be charged")
    memory_mb: float
    seconds: float = Field(description="Predicted run time on a reference node")
    accepted: bool = Field(description="False when a guard refuses these parameters")
    guard: Texts | None = Field(None, description="The guard's message when it refuses")
    wait_seconds: float | None = Field(None, description="Expected wait when every capable node is busy; null: a slot is free")


class JobIn(BaseModel):
    workflow: str
    params: dict[str, Any] = {}
    expert: bool = True
    queue_if_busy: bool = Field(False, description="Queue even when every node is busy (else 409 with the wait)")
    webhook_url: str | None = Field(None, description="POSTed the job record when the job ends (signed)")


class OutputOut(BaseModel):
    asset_id: str
    kind: str


class JobOut(BaseModel):
    id: str
    workflow: str
    state: Literal["queued", "dispatched", "submitted", "running", "succeeded", "failed", "cancelled"]
    params: dict[str, Any]
    cost: int
    refunded: int
    progress: float
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    outputs: list[OutputOut] = []
    reason: Texts | None = None
    ahead: int | None = Field(None, description="Queued jobs ahead of this one (queued jobs only)")
    wait_seconds: float | None = Field(None, description="Expected wait before it starts (queued jobs only)")


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_before: str | None = Field(None, description="Pass as `before` for the next (older) page; null at the end")


class AssetOut(BaseModel):
    asset_id: str
    size: int
    kind: str
    format: str
    width: int | None = None
    height: int | None = None


class BalanceOut(BaseModel):
    balance: int


class LedgerEntryOut(BaseModel):
    id: int
    at: dt.datetime
    kind: str
    amount: int
    balance_after: int
    job_id: str | None = None
    workflow: str | None = None
    note: str | None = None


class LedgerPage(BaseModel):
    entries: list[LedgerEntryOut]
    next_before: int | None = None


class WebhookAttemptOut(BaseModel):
    at: dt.datetime
    status: int | None = None
    error: str | None = None


class WebhookOut(BaseModel):
    url: str
    state: Literal["pending", "delivered", "gave_up"]
    attempts: list[WebhookAttemptOut]


class GrantIn(BaseModel):
    amount: int = Field(gt=0)
    note: str | None = Field(None, max_length=200)


class LimitsIn(BaseModel):
    limits: dict[str, int | None] = Field(description="Limit name → value (0: none; null: back to the role default)")


class UserOut(BaseModel):
    name: str
    role: str
    disabled: bool
    balance: int
    limits: dict[str, int]
    usage: dict[str, int]


class UserList(BaseModel):
    users: list[UserOut]


class CodesIn(BaseModel):
    count: int = Field(ge=1)
    credits: int = Field(gt=0)
    expires_days: float | None = Field(None, gt=0)


class CodesOut(BaseModel):
    batch: str
    credits: int
    expires_at: dt.datetime | None = None
    codes: list[str]


class NodeOut(BaseModel):
    node_id: str
    label: str
    simulated: bool
    free_slots: int
    queue_remaining: int
    running_job: str | None = None


class NodeList(BaseModel):
    nodes: list[NodeOut]
