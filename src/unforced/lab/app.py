"""The lab's ASGI app (FastAPI): the HTTP API of DESIGN.md, the page, and its vendored static files.

    GET    /                        the page (report/page.py's shell, static/lab.js, vendored uPlot)
    GET    /api/options             tasks, model sizes, strategies and every parameter's range
    POST   /api/jobs                {"task", "reward_weight", "steps"[, "model", "strategy", "seed", ...]} -> {"id"}
    GET    /api/jobs/{id}           the job's state
    GET    /api/jobs/{id}/events    server-sent events, one JSON object each (jobs.py says which keys)
    PATCH  /api/jobs/{id}           {"reward_weight"} and/or {"paused"}
    POST   /api/jobs/{id}/recovery  {"position", "token"}: the recovery view of both models (beliefs.py)
    DELETE /api/jobs/{id}           stop the job (reset); its run directory stays
    GET    /api/runs                the run directories under the lab's runs folder
    GET    /api/runs/{name}         a listed run's curves replayed from its metrics.jsonl

Every parameter is validated with pydantic; an out-of-range or unknown one gets 422 whose `message` names the
field. Bodies over `max_body_bytes` get 413, a job past `max_jobs` (or a second one for one browser session) 429,
a run directory that is not listed 404: no file-system path from the client reaches the disk otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
import uuid
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator

from unforced.diagnostics.suite import clean_json
from unforced.lab.job import JobSettings
from unforced.lab.jobs import MODEL_SIZES, JobLimitError, Jobs, replay, warm_up
from unforced.lab.page import lab_page
from unforced.runfiles import read_metrics
from unforced.tasks import TASKS

STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "unforced_lab_session"
MAX_BODY_BYTES = 16 * 1024
JOB_ID = re.compile(r"[0-9a-f]{12}")
RUN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
KEEP_ALIVE_SECONDS = 15.0
POLL_SECONDS = 0.05

Integer = Annotated[int, Field(strict=True)]


class JobRequest(BaseModel):
    """POST /api/jobs: one job's settings (DESIGN.md's lab API, with the lab's optional extras)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    task: str = "toy-translation"
    reward_weight: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    steps: Integer = Field(ge=1, le=100_000)
    model: Literal["tiny", "small", "medium"] = "small"
    strategy: Literal["reinforce"] = "reinforce"
    seed: Integer = Field(0, ge=0, le=2**31 - 1)
    eval_every: Integer = Field(10, ge=1, le=1000)
    eval_limit: Integer = Field(64, ge=8, le=1000)
    batch_size: Integer = Field(32, ge=1, le=256)
    learning_rate: float = Field(2e-3, gt=0.0, le=0.1, allow_inf_nan=False)
    reward_learning_rate: float = Field(3e-4, gt=0.0, le=0.1, allow_inf_nan=False)
    test_limit: Integer = Field(200, ge=8, le=5000)

    @field_validator("task")
    @classmethod
    def known_task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(f"unknown task {value!r}; known: {', '.join(TASKS)}")
        return value


class JobUpdate(BaseModel):
    """PATCH /api/jobs/{id}: the slider (takes effect at the next step) and pause / resume."""

    model_config = ConfigDict(extra="forbid")

    reward_weight: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    paused: Annotated[bool, Field(strict=True)] | None = None


class RecoveryRequest(BaseModel):
    """POST /api/jobs/{id}/recovery: edit the gold prefix's token at `position` (1-based) to `token`."""

    model_config = ConfigDict(extra="forbid")

    position: Integer = Field(ge=1, le=1000)
    token: str = Field(min_length=1, max_length=100)


def field_message(errors: list[dict]) -> str:
    """'<field>: <what is wrong>' for the first validation error (the body's own location left out)."""
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


class BodyLimit:
    """ASGI middleware: refuse a request body over `limit` bytes with 413, by its Content-Length or, sent
    chunked, counted as it arrives (the body is read here, at most `limit` bytes, then handed on)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send)
            if not message.get("more_body", False):
                break
        body, handed = b"".join(chunks), False

        async def replayed():
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send):
        text = f"request body over {self.limit} bytes"
        body = json.dumps({"detail": text, "message": text}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(runs_root: Path | str = "lab-runs", max_jobs: int = 2, max_body_bytes: int = MAX_BODY_BYTES,
               one_job_per_session: bool = True) -> FastAPI:
    """The lab app: jobs write their run directories under `runs_root`; at most `max_jobs` train at once."""
    jobs = Jobs(Path(runs_root), max_jobs=max_jobs)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await asyncio.to_thread(warm_up)  # before the port opens: no Train press can come before it
        yield
        await asyncio.to_thread(jobs.stop_all)  # Ctrl-C: every worker stops at its next step

    app = FastAPI(title="unforced lab", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.jobs = jobs
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        errors = clean_json(jsonable_encoder(error.errors(), custom_encoder={Exception: str}))  # NaN input
        return JSONResponse(status_code=422, content={"detail": errors, "message": field_message(errors)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return JSONResponse(status_code=error.status_code, content={"detail": error.detail, "message": error.detail})

    def job_or_404(job_id: str):
        job = jobs.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise HTTPException(404, f"unknown job {job_id!r}")
        return job

    def listed_runs() -> list[str]:
        root = jobs.runs_root
        if not root.is_dir():
            return []
        return sorted(path.name for path in root.iterdir()
                      if path.is_dir() and RUN_NAME.fullmatch(path.name) and (path / "metrics.jsonl").exists())

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request):
        response = HTMLResponse(lab_page())
        if SESSION_COOKIE not in request.cookies:
            response.set_cookie(SESSION_COOKIE, uuid.uuid4().hex, httponly=True, samesite="strict")
        return response

    @app.get("/api/options")
    async def options():
        limits: dict[str, dict] = {}
        for name, info in JobRequest.model_fields.items():
            for meta in info.metadata:
                for bound in ("gt", "ge", "le"):
                    if getattr(meta, bound, None) is not None:
                        limits.setdefault(name, {})[bound] = getattr(meta, bound)
        return {"tasks": list(TASKS), "default_task": "toy-translation", "models": list(MODEL_SIZES),
                "strategies": ["reinforce"], "defaults": dataclasses.asdict(JobSettings()), "ranges": limits}

    @app.post("/api/jobs", status_code=201)
    async def start_job(request: Request, settings: JobRequest):
        session = request.cookies.get(SESSION_COOKIE) if one_job_per_session else None
        try:
            job = jobs.start(JobSettings(**settings.model_dump()), session=session)
        except JobLimitError as error:
            raise HTTPException(429, str(error)) from None
        return {"id": job.id, "run_dir": job.run_dir.name}

    @app.get("/api/jobs/{job_id}")
    async def describe(job_id: str):
        return job_or_404(job_id).describe()

    @app.patch("/api/jobs/{job_id}")
    async def update(job_id: str, change: JobUpdate):
        job = job_or_404(job_id)
        if change.reward_weight is None and change.paused is None:
            raise HTTPException(422, "body: give reward_weight and/or paused")
        if change.reward_weight is not None:
            job.set_reward_weight(change.reward_weight)
        if change.paused is not None:
            job.set_paused(change.paused)
        return job.describe()

    @app.delete("/api/jobs/{job_id}")
    async def reset(job_id: str):
        job = job_or_404(job_id)
        jobs.remove(job.id)
        return {"id": job.id, "state": job.state}

    @app.post("/api/jobs/{job_id}/recovery")
    async def recovery(job_id: str, edit: RecoveryRequest):
        job = job_or_404(job_id)
        if not job.live:
            raise HTTPException(409, f"job {job_id} is not training ({job.state})")
        question = job.ask(edit.position, edit.token)
        if not await asyncio.to_thread(question.answered.wait, 60.0):
            raise HTTPException(504, "the worker did not answer within 60 s")
        if question.error is not None:
            status = 409 if question.error.startswith("the job") else 422
            raise HTTPException(status, question.error)
        return {"recovery": question.result}

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request):
        job = job_or_404(job_id)
        last = request.headers.get("last-event-id", "")
        start = int(last) if last.isdigit() else 0

        async def stream():
            sequence, quiet_since = start, time.monotonic()
            while True:
                for number, event in job.events_after(sequence):
                    yield f"id: {number}\ndata: {json.dumps(clean_json(event))}\n\n"
                    sequence, quiet_since = number, time.monotonic()
                if job.ended and sequence >= job.sequence:
                    return
                if await request.is_disconnected():
                    return
                if time.monotonic() - quiet_since > KEEP_ALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()
                await asyncio.sleep(POLL_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/runs")
    async def runs():
        return {"runs": listed_runs()}

    @app.get("/api/runs/{name}")
    async def open_run(name: str):
        known = listed_runs()
        if name not in known:  # only a listed name reaches the disk: no path from the client
            raise HTTPException(404, f"unknown run directory {name!r}; known: {', '.join(known) or 'none'}")
        run_dir = jobs.runs_root / name
        points = replay(read_metrics(run_dir / "metrics.jsonl"))
        return clean_json({"name": name, "points": points, "finished": (run_dir / "results.json").exists()})

    return app


__all__ = ["JobRequest", "JobUpdate", "MAX_BODY_BYTES", "create_app"]
