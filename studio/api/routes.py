"""The integrator's endpoints under ``/v1``: workflows, quotes, uploads, jobs, outputs,
history, balance and ledger. Every rule (prices, guards, limits, refunds, access) is the
backend's, the same the studio's pages obey."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import quote as url_quote

from fastapi import APIRouter, Depends, File, Header, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse

from backend import assets, jobs
from backend.accounts import ledger
from backend.accounts.tokens import TokenUser
from backend.assets.blobs import read_chunks
from backend.ports.blob_store import is_sha256
from backend.errors import NotFound
from backend.jobs import limits, queries, webhooks
from backend.jobs.payload import job_payload
from backend.jobs.submit import Accepted, NeedsConfirmation, cancel, price, submit
from backend.jobs.waiting import queue_wait, wait_if_busy
from backend.workflows import WorkflowSpec

from ..context import Studio
from ..files import MEDIA_TYPES, stream_chunks, sniff_media_type
from .auth import reader, writer
from .errors import ApiError, ErrorResponse
from .events import event_stream, last_event_id
from .schemas import (AssetOut, BalanceOut, JobIn, JobOut, JobPage, LedgerEntryOut, LedgerPage, ParamOut, PresetOut,
                      QuoteIn, QuoteOut, Texts, WebhookAttemptOut, WebhookOut, WorkflowList, WorkflowOut,
                      WorkflowSummary)

MAX_PAGE = 100
#: Multipart overhead allowed over the upload limit before the body is read at all.
MULTIPART_SLACK = 64 * 1024

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in ((400, "Bad parameters"), (401, "No valid token"), (403, "The token may not do this"),
                       (404, "Not there, or not yours"), (429, "A limit: see Retry-After"),
                       (503, "The database or every node is away: see Retry-After"))
}


def _studio(request: Request) -> Studio:
    return request.app.state.studio


def _texts(text: Any) -> Texts:
    return Texts(en=text.en, zh=text.zh)


def _summary(spec: WorkflowSpec) -> WorkflowSummary:
    return WorkflowSummary(name=spec.name, title=_texts(spec.title), description=_texts(spec.description),
                           category=spec.category)


def _job_out(studio: Studio, card: queries.JobCard) -> JobOut:
    out = JobOut.model_validate(job_payload(card))
    if card.job.state == "queued":
        wait = queue_wait(studio.backend, card.job)
        out.ahead, out.wait_seconds = wait.ahead, round(wait.seconds, 1)
    return out


router = APIRouter(prefix="/v1", responses=ERRORS)


@router.get("/workflows", response_model=WorkflowList, tags=["workflows"], summary="List the workflows")
def list_workflows(request: Request, _user: TokenUser = Depends(reader)) -> WorkflowList:
    return WorkflowList(workflows=[_summary(spec) for spec in _studio(request).backend.library])


@router.get("/workflows/{name}", response_model=WorkflowOut, tags=["workflows"],
            summary="One workflow: its parameters and their limits")
def get_workflow(name: str, request: Request, _user: TokenUser = Depends(reader)) -> WorkflowOut:
    spec = _studio(request).backend.library.get(name)
    params = [ParamOut(name=p.name, type=p.type, label=_texts(p.label), help=_texts(p.help) if p.help else None,
                       level=p.level, required=p.required, default=p.default, min=p.min, max=p.max, step=p.step,
                       options=list(p.options), max_length=p.max_length) for p in spec.params]
    presets = [PresetOut(name=p.name, label=_texts(p.label), default=p.default, options=[o.name for o in p.options])
               for p in spec.presets]
    return WorkflowOut(**_summary(spec).model_dump(), params=params, presets=presets,
                       outputs=[o.kind for o in spec.outputs])


@router.post("/quote", response_model=QuoteOut, tags=["jobs"], summary="Price, guard verdict and wait for parameters")
def get_quote(body: QuoteIn, request: Request, user: TokenUser = Depends(reader)) -> QuoteOut:
    backend = _studio(request).backend
    priced = price(backend, user.user_id, body.workflow, body.params, expert=body.expert)
    q = priced.quote
    wait = wait_if_busy(backend, priced.needs)  # NodeUnavailable (503) when no online node can run it
    return QuoteOut(workflow=priced.spec.name, cost=q.cost, memory_mb=round(q.memory_mb, 1), seconds=round(q.seconds, 1),
                    accepted=q.accepted, guard=_texts(q.rejection) if q.rejection else None,
                    wait_seconds=round(wait, 1) if wait is not None else None)


@router.post("/assets", response_model=AssetOut, status_code=201, tags=["assets"],
             responses={413: {"model": ErrorResponse, "description": "Larger than the upload limit or the storage quota"}},
             summary="Upload an input image (the same bytes give the same asset id)")
def upload(request: Request, file: UploadFile = File(...), user: TokenUser = Depends(writer)) -> AssetOut:
    backend = _studio(request).backend
    settings = backend.settings
    size = file.size if file.size is not None else 0
    if size > settings.max_upload_bytes:
        raise ApiError(413, "too_large", f"The file is larger than the {settings.max_upload_bytes} byte upload limit.",
                       f"文件超过 {settings.max_upload_bytes} 字节的上传上限。", field="file")
    limits.check_storage(backend.db, settings, user.user_id, size)
    record = assets.store_upload(backend.db, backend.blobs, user.user_id, read_chunks(file.file),
                                 name=file.filename or "", max_bytes=settings.max_upload_bytes,
                                 max_pixels=settings.max_image_pixels)
    return AssetOut(asset_id=record.id, size=record.size, kind=record.kind, format=record.format,
                    width=record.width, height=record.height)


@router.get("/assets/{asset_id}", tags=["assets"], summary="Download an asset you own (an output or an upload)",
            response_class=StreamingResponse,
            responses={200: {"content": {"image/png": {}, "application/octet-stream": {}},
                             "description": "The bytes"}})
def download(asset_id: str, request: Request, user: TokenUser = Depends(reader)) -> StreamingResponse:
    studio = _studio(request)
    backend = studio.backend
    if not is_sha256(asset_id):
        raise NotFound(f"No asset {asset_id}.", zh=f"没有文件 {asset_id}。")
    if assets.user_can_read(backend.db, user.user_id, asset_id):
        record, fh = assets.open_for_user(backend.db, backend.blobs, user.user_id, asset_id)
        media_type = MEDIA_TYPES.get(record.format.upper(), "")
    elif studio.feed.preview_owner(asset_id) == user.user_id:
        fh, media_type = backend.blobs.open(asset_id), ""
    else:
        raise NotFound(f"No asset {asset_id}.", zh=f"没有文件 {asset_id}。")
    head = b""
    if not media_type:
        head = fh.read(16)  # an object store's stream cannot seek back
        media_type = sniff_media_type(head)
    name = f"{asset_id[:16]}.{media_type.rsplit('/', 1)[-1]}"
    return StreamingResponse(stream_chunks(fh, head), media_type=media_type, headers={
        "Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f"attachment; filename*=UTF-8''{url_quote(name)}"})


@router.post("/jobs", response_model=JobOut, status_code=201, tags=["jobs"],
             responses={200: {"model": JobOut, "description": "A retried request: the job made the first time"},
                        402: {"model": ErrorResponse, "description": "Not enough credits"},
                        409: {"model": ErrorResponse, "description": "Every node is busy (error.wait_seconds), or the "
                                                                     "Idempotency-Key was used for another request "
                                                                     "(other workflow or parameters)"}},
             summary="Submit a job")
def create_job(body: JobIn, request: Request, response: Response, user: TokenUser = Depends(writer),
               idempotency_key: str | None = Header(None, max_length=jobs.MAX_IDEMPOTENCY_KEY,
                                                   description="Retrying with the same key never charges twice")) -> Any:
    studio = _studio(request)
    result = submit(studio.backend, user.user_id, body.workflow, body.params,
                    idempotency_key=idempotency_key or uuid.uuid4().hex, expert=body.expert,
                    queue_if_busy=body.queue_if_busy, webhook_url=body.webhook_url, on_queued=studio.wake)
    if isinstance(result, NeedsConfirmation):
        raise ApiError(409, "busy", result.message["en"].replace(" Queue anyway?", " Send queue_if_busy=true to queue."),
                       result.message["zh"], field="queue_if_busy", extra={"wait_seconds": round(result.wait_seconds, 1)})
    if not isinstance(result, Accepted):
        raise result.error
    if not result.created:  # the same request again (another one with this key was a 409 above)
        response.status_code = 200
    return _job_out(studio, queries.job_card(studio.backend.db, result.job.id))


@router.get("/jobs", response_model=JobPage, tags=["jobs"], summary="Your jobs, newest first (paged)")
def history(request: Request, user: TokenUser = Depends(reader), limit: int = Query(20, ge=1, le=MAX_PAGE),
            before: dt.datetime | None = Query(None, description="`next_before` of the previous page")) -> JobPage:
    studio = _studio(request)
    if before is not None and before.tzinfo is None:
        before = before.replace(tzinfo=dt.timezone.utc)
    page = queries.history_page(studio.backend.db, user.user_id, before=before, size=limit)
    cards = [queries.JobCard(job=row.job, outputs=row.outputs, refunded=row.refund) for row in page.rows]
    return JobPage(jobs=[_job_out(studio, card) for card in cards],
                   next_before=page.next_cursor.isoformat() if page.next_cursor else None)


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"], summary="A job's state")
def job_status(job_id: str, request: Request, user: TokenUser = Depends(reader)) -> JobOut:
    studio = _studio(request)
    return _job_out(studio, queries.job_card(studio.backend.db, job_id, user_id=user.user_id))


@router.get("/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: state, stage, progress, preview, output, end"}},
            summary="Follow a job live (Server-Sent Events)")
def job_events(job_id: str, request: Request, user: TokenUser = Depends(reader),
               last_event: str | None = Header(None, alias="Last-Event-ID",
                                               description="Resume after this event (its `id:`)")) -> StreamingResponse:
    studio = _studio(request)
    jobs.get(studio.backend.db, job_id, user_id=user.user_id)  # 404 before the stream starts
    stream = event_stream(studio, user.user_id, job_id, resume_after=last_event_id(last_event))
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, tags=["jobs"],
             responses={409: {"model": ErrorResponse, "description": "The job has already ended"}},
             summary="Cancel a job (its credits are refunded)")
def cancel_job(job_id: str, request: Request, user: TokenUser = Depends(writer)) -> JobOut:
    studio = _studio(request)
    cancel(studio.backend, job_id, user_id=user.user_id, on_freed=studio.wake)
    return _job_out(studio, queries.job_card(studio.backend.db, job_id, user_id=user.user_id))


@router.get("/jobs/{job_id}/webhook", response_model=WebhookOut, tags=["jobs"],
            summary="A job's webhook and every delivery attempt")
def job_webhook(job_id: str, request: Request, user: TokenUser = Depends(reader)) -> WebhookOut:
    db = _studio(request).backend.db
    jobs.get(db, job_id, user_id=user.user_id)
    hook = webhooks.webhook_of(db, job_id)
    if hook is None:
        raise NotFound("This job has no webhook.", zh="该任务没有 Webhook。")
    return WebhookOut(url=hook[0], state=hook[1],  # type: ignore[arg-type]
                      attempts=[WebhookAttemptOut(at=a.at, status=a.status, error=a.error)
                                for a in webhooks.attempts(db, job_id)])


@router.get("/balance", response_model=BalanceOut, tags=["credits"], summary="Your balance")
def balance(request: Request, user: TokenUser = Depends(reader)) -> BalanceOut:
    return BalanceOut(balance=ledger.balance_of(_studio(request).backend.db, user.user_id))


@router.get("/ledger", response_model=LedgerPage, tags=["credits"], summary="Your credit movements, newest first (paged)")
def ledger_page(request: Request, user: TokenUser = Depends(reader), limit: int = Query(50, ge=1, le=MAX_PAGE),
                before: int | None = Query(None, description="`next_before` of the previous page")) -> LedgerPage:
    rows = ledger.ledger_page(_studio(request).backend.db, user.user_id, limit=limit + 1, before=before).lines
    entries = [LedgerEntryOut(id=e.id, at=e.created_at, kind=e.kind, amount=e.amount, balance_after=e.balance_after,
                              job_id=e.job_id, workflow=e.workflow, note=e.note) for e in rows[:limit]]
    return LedgerPage(entries=entries, next_before=rows[limit - 1].id if len(rows) > limit else None)
