"""Typed configuration of the ``server.manager`` block of a pygeoapi config.

Validated once, when pygeoapi builds the manager; a mistake is reported as a
:class:`~pygeoapi_prefect.errors.ConfigError` naming the full YAML key, e.g.
``server.manager.local.max_workers: Input should be greater than or equal to 1``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pygeoapi_prefect.errors import ConfigError
from pygeoapi_prefect.urls import without_credentials

__all__ = [
    "AuthConfig",
    "HeaderAuthConfig",
    "JwtAuthConfig",
    "CallbacksConfig",
    "HeartbeatConfig",
    "LimitsConfig",
    "LocalExecutionConfig",
    "LogsConfig",
    "ManagerConfig",
    "MetricsConfig",
    "PrefectUIConfig",
    "PublishConfig",
    "RecoveryConfig",
    "ReferencesConfig",
    "ResultStoreConfig",
    "RetentionConfig",
    "WatchConfig",
    "load_config",
    "parse_duration",
]

YAML_PREFIX = "server.manager"
#: The answers of ``results.raw_several``: the standard's, or pygeoapi's managers'.
RAW_SEVERAL = ("multipart", "json")
DEFAULT_RESULTS_DIR = "pygeoapi-results"


def _allow_list(value: list[str]) -> list[str]:
    # Networks (10.0.0.0/8) or host names: what callbacks.allow and references.allow take.
    for entry in value:
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not a network (like 10.0.0.0/8)") from exc
        elif not entry.strip():
            raise ValueError("an empty entry")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResultStoreConfig(_Strict):
    """Where job results are written, and how raw ones are answered (``server.manager.results``)."""

    url: str | None = Field(
        default=None,
        description=(
            "fsspec URL of the result store: a local folder (`/srv/results`, "
            "`file:///srv/results`) or any other fsspec URL (`s3://bucket/prefix`), "
            "but not `memory://`, which async jobs in other processes cannot reach. "
            "Defaults to `server.manager.output_dir`, else "
            f"`./{DEFAULT_RESULTS_DIR}`."
        ),
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Keyword arguments for the fsspec filesystem (e.g. `client_kwargs`). "
            "Keep credentials out of here: use the environment or config files."
        ),
    )
    block: str | None = Field(
        default=None,
        description=(
            "A Prefect filesystem block (`TYPE/NAME`, e.g. `remote-file-system/results`) "
            "whose basepath and settings (credentials included) define the store, "
            "instead of `url` and `storage_options`; loaded on first use."
        ),
    )
    presign_seconds: int = Field(
        default=3600,
        ge=1,
        le=7 * 24 * 3600,
        description=(
            "Lifetime, in seconds, of the presigned URLs given for outputs asked for by "
            "reference (`transmissionMode: reference`) when the store can sign them (S3, "
            "GCS); other stores link to `/jobs/{jobId}/results/{outputId}` instead."
        ),
    )
    raw_several: str = Field(
        default="multipart",
        description=(
            "The answer of `response: raw` with several outputs by value (sync execution and "
            "`GET /jobs/{jobId}/results`). `multipart`: `multipart/related`, one part per "
            "output, as OGC API - Processes 1.0 requires. `json`: the process's own JSON map "
            "of its outputs, as pygeoapi's TinyDB and PostgreSQL managers answer, for clients "
            "written against those; where there is no such map (outputs the process streamed "
            "through `pygeoapi_prefect.outputs`, bytes among the outputs, a media type other "
            "than JSON, or a mix with outputs by reference) the answer stays "
            "`multipart/related`."
        ),
    )

    @field_validator("raw_several")
    @classmethod
    def _raw_several(cls, value: str) -> str:
        if value not in RAW_SEVERAL:
            raise ValueError(f"must be multipart or json, got {value!r:.40}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ResultStoreConfig:
        if self.block and (self.url or self.storage_options):
            raise ValueError("give either `block` or `url`/`storage_options`, not both")
        if self.block is not None and "/" not in self.block:
            raise ValueError(f"`block` must be TYPE/NAME, got {self.block!r}")
        return self


class LocalExecutionConfig(_Strict):
    """How jobs run next to pygeoapi (``server.manager.local``)."""

    max_workers: int = Field(
        default=32,
        ge=1,
        le=256,
        description=(
            "Async jobs that run at once on this server (more wait, in order). Each "
            "runs in a process of its own, forked from a template process that imported "
            "pygeoapi and the processors once (copy-on-write: a few MiB per job), and killed "
            "on dismiss; the pool grows with the work and shrinks when idle. With "
            "`pool_scope: server` (the default) the limit is for the whole server, however "
            "many worker processes it has (gunicorn, uvicorn `--workers`); with "
            "`pool_scope: process`, for each worker process. Cap CPU-heavy processes with "
            "`process_limits`."
        ),
    )
    process_limits: dict[str, Annotated[int, Field(ge=1, le=256)]] = Field(
        default_factory=dict,
        description=(
            "At most this many jobs of a process run at once on this server (per worker "
            "process with `pool_scope: process`), by process id (e.g. `{buffer: 2}` for a "
            "CPU-heavy process on 2 cores); its further jobs wait while other processes' "
            "jobs run. Processes not named share `max_workers` only."
        ),
    )
    pool_scope: Literal["server", "process"] = Field(
        default="server",
        description=(
            "What `max_workers` and `process_limits` count. `server`: the jobs of every "
            "worker process of this server (gunicorn's, uvicorn `--workers`', Django under "
            "gunicorn): each running job holds one of `max_workers` slot files (an `flock`, "
            "which the kernel lets go when the job's process ends, killed or not). The "
            "worker processes of one server are those with the same parent process (the "
            "gunicorn master, the uvicorn supervisor), the same `server.manager` section "
            "and the same `PYGEOAPI_CONFIG`; or those that name the same `pool_dir`. "
            "`api_write_concurrency` is then for the whole server too. `process`: each "
            "worker process has a pool and Prefect write queue of its own (a server of 4 "
            "workers runs up to 4 x `max_workers` jobs)."
        ),
    )
    pool_dir: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description=(
            "With `pool_scope: server`, the local directory of the slot files: every "
            "process that names it shares one pool, whatever its parent (two servers on "
            "one host, workers started by a process manager). Default: a directory of "
            "this server under the temporary directory (`$TMPDIR`), named after its "
            "parent process and config, and removed by a later server once that parent "
            "has ended."
        ),
    )

    template_start: Literal["fork", "spawn"] = Field(
        default="fork",
        description=(
            "How a server process starts the template that forks its job processes. "
            "`fork`: a copy of the server process, forked while the app is imported (only "
            "the main thread exists then), shares the server's memory copy-on-write; the "
            "server's imported objects are then frozen out of the garbage collector "
            "(`gc.freeze()`) so that the pages stay shared. A process that already runs "
            "other threads at that point spawns instead. `spawn`: a fresh interpreter "
            "that imports pygeoapi and the processors again (54-84 MiB more per server "
            "process)."
        ),
    )

    @model_validator(mode="after")
    def _pool_dir_needs_server_scope(self) -> LocalExecutionConfig:
        if self.pool_dir is not None and self.pool_scope != "server":
            raise ValueError(
                "`pool_dir` names the slot files shared by the processes of a server: it "
                f"needs `pool_scope: server` (got `pool_scope: {self.pool_scope}`)"
            )
        return self

    idle_seconds: float = Field(
        default=30,
        gt=0,
        le=86400,
        description=(
            "Seconds a thread of the local pool waits for a job before it ends (the pool "
            "shrinks when idle; a job's own process ends with the job)."
        ),
    )
    sync_visible_after: float = Field(
        default=0.25,
        ge=0,
        le=3600,
        description=(
            "Seconds after which a still-running sync job is recorded in Prefect as "
            "Running (so it shows in the UI while it runs). A faster job is recorded "
            "once, in its final state, which saves a Prefect API call."
        ),
    )
    async_visible_after: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description=(
            "Seconds after which a still-running async job is recorded in Prefect as "
            "Running; 0 (the default) records every job Running before it runs. With "
            "more, a faster job goes from Pending straight to its final state (one "
            "Prefect write fewer; its `started` is then its end time), at the price of "
            "one read before it runs."
        ),
    )
    cancel_check_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description=(
            "How often a running async job's flow run is checked for a cancellation "
            "made elsewhere (another pygeoapi instance, the Prefect UI)."
        ),
    )
    instance: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description=(
            "A name for this pygeoapi instance, written on each async job it accepts "
            "(flow run label `pygeoapi.instance`), for people reading Prefect. Recovery does "
            "not depend on it: each server process holds its queued jobs under a lease of "
            "its own (`recovery`). Defaults to the host name and a hash of the path of the "
            "pygeoapi config (`PYGEOAPI_CONFIG`)."
        ),
    )
    shutdown_grace: float = Field(
        default=20,
        ge=0,
        le=3600,
        description=(
            "Seconds a stopping server process (SIGTERM, gunicorn's worker recycling, "
            "interpreter exit) lets its running async jobs finish; jobs still running then "
            'are killed and end `failed` ("Interrupted ... submit the job again"). Queued '
            "jobs are handed over to the other processes at once. Keep it below the "
            "server's own kill timeout (gunicorn `--graceful-timeout` and `--timeout`, 30 s "
            "by default; Kubernetes `terminationGracePeriodSeconds`)."
        ),
    )


class HeartbeatConfig(_Strict):
    """Detecting jobs whose process died (``server.manager.heartbeat``)."""

    interval: float = Field(
        default=30,
        gt=0,
        le=3600,
        description=(
            "Seconds between the heartbeats (`prefect.flow-run.heartbeat` events) a "
            "running async job sends to Prefect."
        ),
    )
    zombie_timeout: float = Field(
        default=75,
        ge=10,
        le=86400,
        description=(
            "Seconds without a heartbeat after which a running job is marked Crashed "
            "(`failed`) by a Prefect automation that the manager installs (by name, once "
            "per Prefect server). Must exceed `interval`, and the heartbeat interval of "
            "every Prefect worker that runs pygeoapi jobs. Prefect evaluates it every 5 s: "
            "a dead job is failed within zombie_timeout + 5 s of its last heartbeat."
        ),
    )
    install_automation: bool = Field(
        default=True,
        description="Create or update the zombie automation when the local runner starts.",
    )

    @model_validator(mode="after")
    def _timeout_above_interval(self) -> HeartbeatConfig:
        if self.zombie_timeout <= self.interval:
            raise ValueError(
                f"zombie_timeout ({self.zombie_timeout:g}) must be larger than interval "
                f"({self.interval:g})"
            )
        return self


class RecoveryConfig(_Strict):
    """Handing queued jobs over between server processes (``server.manager.recovery``)."""

    lease_seconds: float = Field(
        default=60,
        ge=2,
        le=3600,
        description=(
            "Each server process holds the async jobs it queued under a lease in Prefect "
            "(variable `pygeoapi_lease_<id>`), renewed every quarter of this. The queued "
            "jobs of a process whose lease is older than this (killed, host lost, never "
            "restarted) are taken over by a live process."
        ),
    )
    scan_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description=(
            "How often each server process looks for queued jobs whose holder is dead or "
            "gone. A queued job of a killed process runs elsewhere within "
            "`lease_seconds + scan_seconds` (90 s by default); of a process that stopped "
            "gracefully, within `scan_seconds`."
        ),
    )


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Seconds of a duration: a number of seconds, or e.g. ``"30d"``, ``"12h"``, ``"1d12h"``.

    Raises:
        ValueError: not a duration (the message says what is).

    """
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30d, 12h, 90m, 45s, or seconds")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    total, number = 0.0, ""
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif char in _UNITS and number:
            total += float(number) * _UNITS[char]
            number = ""
        else:
            raise ValueError(
                f"must be a duration such as 30d, 12h, 90m, 45s, or seconds, got {value!r}"
            )
    if number or not text:
        raise ValueError(
            f"must be a duration such as 30d, 12h, 90m, 45s, or seconds, got {value!r}"
        )
    return total


class RetentionConfig(_Strict):
    """How long finished jobs are kept (``server.manager.retention``)."""

    max_age: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Finished jobs (successful, failed, dismissed) that ended longer ago than this "
            "are pruned: their results are deleted and their flow runs too, so they answer "
            "404. A duration: `30d`, `12h`, `90m`, `45s`, combinations (`1d12h`), or "
            "seconds. Unset: no age limit. Queued and running jobs are never pruned."
        ),
    )
    max_jobs: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Keep at most this many finished jobs (the newest); older ones are pruned as "
            "with `max_age`. Unset: no limit."
        ),
    )
    sweep_seconds: float = Field(
        default=0,
        ge=0,
        le=7 * 86400,
        description=(
            "Prune inside the server every this many seconds (0: never; run "
            "`pygeoapi-prefect prune` from cron instead). One server process at a "
            "time sweeps, whatever the number of processes and hosts: each period's "
            "sweep belongs to the process that created its Prefect variable "
            "`pygeoapi_retention_<period>`."
        ),
    )

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)


class CallbacksConfig(_Strict):
    """Delivery of OGC ``subscriber`` callbacks (``server.manager.callbacks``)."""

    allow: list[str] = Field(
        default_factory=list,
        description=(
            "Internal destinations that callbacks may reach anyway: networks "
            "(`10.0.0.0/8`, `127.0.0.1`) or host names. Any address that is not globally "
            "reachable (loopback, private, link-local, shared `100.64.0.0/10`, "
            "`198.18.0.0/15`, multicast, reserved, and IPv6 forms of these) is refused "
            "otherwise: a 400 at submission, and no connection at delivery."
        ),
    )
    timeout: float = Field(default=10, gt=0, le=120, description="Seconds one delivery may take.")
    retries: int = Field(
        default=4,
        ge=0,
        le=10,
        description="Further attempts after a failed delivery, 1, 2, 4... s apart.",
    )
    workers: int = Field(
        default=4,
        ge=1,
        le=64,
        description=(
            "Deliveries one server process makes at once (threads of its callback pool, "
            "started as needed). A delivery holds its thread through its retries."
        ),
    )
    queue_size: int = Field(
        default=200,
        ge=0,
        le=100_000,
        description=(
            "Deliveries that may wait for a free `workers` thread. When the queue is full "
            "a new delivery is dropped, with a WARNING naming the job, the URI key and "
            "the number dropped so far; the queued ones keep their turn."
        ),
    )
    drain_seconds: float = Field(
        default=5,
        ge=0,
        le=60,
        description=(
            "Seconds a stopping server process goes on delivering queued callbacks, "
            "after its jobs have stopped (`local.shutdown_grace`); what is left then is "
            "abandoned and logged. Keep `shutdown_grace` + this below the server's "
            "graceful timeout (gunicorn: 30 s)."
        ),
    )
    proxy: str | None = Field(
        default=None,
        description=(
            "An egress HTTP proxy (`http://proxy.internal:3128`) that every delivery goes "
            "through, instead of connecting to the address checked here; the proxy "
            "then resolves names and enforces what may be reached. Destinations are "
            "still checked here where names resolve. No `user:password@`."
        ),
    )

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if without_credentials(value) != value:
            raise ValueError("a proxy URL with user:password@ (config values may be logged)")
        if not value.startswith(("http://", "https://")):
            raise ValueError("an http(s) URL of the proxy, like http://proxy.internal:3128")
        return value

    @field_validator("allow")
    @classmethod
    def _parseable(cls, value: list[str]) -> list[str]:
        return _allow_list(value)


class ReferencesConfig(_Strict):
    """Inputs given by reference, ``{"href": ..., "type": ...}`` (``server.manager.references``)."""

    allow: list[str] = Field(
        default_factory=list,
        description=(
            "Internal destinations that `http(s)://` input references may reach anyway: "
            "networks (`10.0.0.0/8`, `127.0.0.1`) or host names, as in `callbacks.allow`. "
            "Loopback, private, link-local, shared and metadata addresses are refused "
            "otherwise."
        ),
    )
    max_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=1,
        le=2**40,
        description=(
            "Largest resolved input, in bytes (100 MiB by default); a larger body, with "
            "or without a Content-Length, is refused naming the input."
        ),
    )
    timeout: float = Field(
        default=30,
        gt=0,
        le=3600,
        description=(
            "Seconds the whole download of one input reference may take (connect and "
            "body together: a server sending one byte a second is cut off)."
        ),
    )
    file_roots: list[str] = Field(
        default_factory=list,
        description=(
            "Folders that `file://` input references may read below (none by default: "
            "`file://` is refused). Symbolic links and `..` are resolved before the check."
        ),
    )

    @field_validator("allow")
    @classmethod
    def _parseable(cls, value: list[str]) -> list[str]:
        return _allow_list(value)

    @field_validator("file_roots")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not Path(entry).is_absolute():
                raise ValueError(f"{entry!r} is not an absolute folder")
        return value


class DeploymentsConfig(_Strict):
    """Jobs of processes run by Prefect workers (``server.manager.deployments``)."""

    sync_timeout: float = Field(
        default=60,
        gt=0,
        le=3600,
        description=(
            "Seconds a sync request waits for a deployment's job; then it answers 504 "
            "and the job goes on (follow it at /jobs/{id})."
        ),
    )
    poll_seconds: float = Field(
        default=0.25, gt=0, le=10, description="How often a waiting sync request checks its job."
    )


class PublishConfig(_Strict):
    """Publishing Prefect deployments as processes (``server.manager.publish``)."""

    enabled: bool = Field(
        default=False,
        description="Publish every deployment tagged `tag` as an OGC process.",
    )
    tag: str = Field(
        default="pygeoapi.publish",
        min_length=1,
        description="The deployment tag that publishes a deployment.",
    )
    refresh_seconds: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="How long the list of published deployments is reused before it is read again.",
    )


class LimitsConfig(_Strict):
    """Bounds on what clients may send (``server.manager.limits``)."""

    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=2**31,
        description=(
            "Largest request body, in bytes, accepted on /processes and /jobs; a larger "
            "one answers 413 before it is read. 16 MiB by default: inline GeoJSON inputs "
            "fit, and no request can tie up a worker or the memory for long."
        ),
    )
    max_json_depth: int = Field(
        default=64,
        ge=4,
        le=500,
        description=(
            "Deepest nesting of arrays and objects in an execute request; deeper answers "
            "400 (GeoJSON needs about 6 levels, and deep nesting would exhaust the "
            "recursion of the JSON and schema code that handles the request)."
        ),
    )


class LogsConfig(_Strict):
    """Job logs, kept as the flow run's logs in Prefect (``server.manager.logs``)."""

    enabled: bool = Field(
        default=True,
        description=(
            "Capture each job's `logging` records and its stdout/stderr, send them to "
            "Prefect as the flow run's logs, and serve them at `GET /jobs/{jobId}/logs`."
        ),
    )
    level: str = Field(
        default="INFO",
        description=(
            "Lowest level of the `logging` records kept (DEBUG, INFO, WARNING, ERROR). In "
            "worker processes (async jobs, Prefect workers) the job's loggers are let down "
            "to it; a sync job's records exist only as far as the server's own logging "
            "configuration (pygeoapi's `logging.level`) lets them."
        ),
    )
    max_lines: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description=(
            "Log lines kept per job; past it (or past `max_bytes`) lines are counted, not "
            "sent, and one last line says how many were dropped."
        ),
    )
    max_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description=(
            "Bytes of log messages kept per job (UTF-8); a single longer line is cut to "
            "what is left."
        ),
    )

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")
        return level


class PrefectUIConfig(_Strict):
    """How jobs read in the Prefect UI (``server.manager.prefect_ui``)."""

    run_names: bool = Field(
        default=True,
        description=(
            "Name each job's flow run `<process id>-<first 8 characters of the job id>` "
            "(one write per job, off the request path: Prefect makes the id only when it "
            "creates the run). Off: Prefect's random names."
        ),
    )
    summary_artifact: bool = Field(
        default=True,
        description=(
            "Write one markdown artifact per job when it ends (its inputs, status, "
            "progress, message and links to its status, results and logs in pygeoapi), "
            "shown on the run's Artifacts tab. One write per job, off the request path."
        ),
    )


#: Signature algorithms a JWT may use: asymmetric only, so a public key can
#: never be taken for an HMAC secret (and ``none`` is never accepted).
JWT_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class JwtAuthConfig(_Strict):
    """Bearer tokens checked against an identity provider's keys (``server.manager.auth.jwt``)."""

    jwks_url: str | None = Field(
        default=None,
        description=(
            "URL of the identity provider's JSON Web Key Set (Keycloak: "
            "`<realm URL>/protocol/openid-connect/certs`). Fetched on first use, cached for "
            "`jwks_cache_seconds`, and fetched again when a token names an unknown key id."
        ),
    )
    jwks_file: str | None = Field(
        default=None, description="A JSON Web Key Set in a file, instead of `jwks_url`."
    )
    issuer: str = Field(description="The `iss` every token must carry (the realm URL).")
    audience: str = Field(description="The `aud` every token must carry (the pygeoapi client).")
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256"],
        min_length=1,
        description=f"Signature algorithms accepted, among {', '.join(JWT_ALGORITHMS)}.",
    )
    user_claim: str = Field(default="sub", description="The claim that names the user.")
    groups_claim: str = Field(
        default="groups",
        description="The claim that lists the user's groups (a list, or one string).",
    )
    leeway: float = Field(
        default=30, ge=0, le=300, description="Seconds of clock skew allowed on `exp` and `nbf`."
    )
    jwks_cache_seconds: float = Field(
        default=300,
        ge=0,
        le=86_400,
        description="Seconds a fetched key set is used before a refetch.",
    )
    jwks_min_refresh_seconds: float = Field(
        default=10,
        ge=0,
        le=3600,
        description=(
            "Seconds between two fetches caused by unknown key ids, so tokens with made-up "
            "key ids cannot make this server hammer the identity provider."
        ),
    )
    jwks_timeout: float = Field(
        default=5, gt=0, le=60, description="Seconds a key set fetch may take."
    )

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in JWT_ALGORITHMS:
                raise ValueError(
                    f"{name!r} is not accepted: use one of {', '.join(JWT_ALGORITHMS)} "
                    "(HMAC and none would let a public key or nothing sign a token)"
                )
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtAuthConfig:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("set exactly one of jwks_url and jwks_file")
        if self.jwks_url is not None and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError(f"jwks_url must be an http(s) URL, got {self.jwks_url!r}")
        return self


class HeaderAuthConfig(_Strict):
    """The user named by a trusted reverse proxy (``server.manager.auth.header``)."""

    user_header: str = Field(
        default="X-Forwarded-User", description="The header carrying the user id."
    )
    groups_header: str = Field(
        default="X-Forwarded-Groups",
        description="The header carrying the user's groups, separated by commas.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description=(
            "Networks the proxy connects from. The headers are honoured only on connections "
            "from there; a request from anywhere else that carries `user_header` or "
            "`groups_header` is refused (401), so nobody can claim an identity by sending it."
        ),
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not a network (like 10.0.0.0/8)") from exc
        return value


class AuthConfig(_Strict):
    """Who is calling, and whose jobs they may see (``server.manager.auth``)."""

    mode: str = Field(
        default="none",
        description=(
            "`none`: no identity, one shared space (every client sees every job); `header`: "
            "the user from a trusted reverse proxy's headers; `jwt`: the user from an "
            "`Authorization: Bearer` token."
        ),
    )
    jwt: JwtAuthConfig | None = Field(default=None, description="Settings of `mode: jwt`.")
    header: HeaderAuthConfig = Field(
        default_factory=HeaderAuthConfig, description="Settings of `mode: header`."
    )
    admins: list[str] = Field(
        default_factory=list, description="User ids that see and manage every job."
    )
    admin_groups: list[str] = Field(
        default_factory=list, description="Groups whose members see and manage every job."
    )
    anonymous: str = Field(
        default="deny",
        description=(
            "Callers without an identity: `deny` answers 401 on execute and every `/jobs` "
            "route (process descriptions stay public); `shared` gives them one shared job "
            "space, apart from every user's."
        ),
    )

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in ("none", "header", "jwt"):
            raise ValueError(f"must be none, header or jwt, got {value!r}")
        return value

    @field_validator("anonymous")
    @classmethod
    def _anonymous(cls, value: str) -> str:
        if value not in ("deny", "shared"):
            raise ValueError(f"must be deny or shared, got {value!r}")
        return value

    @model_validator(mode="after")
    def _jwt_settings(self) -> AuthConfig:
        if self.mode == "jwt" and self.jwt is None:
            raise ValueError(
                "mode jwt needs the jwt block (jwks_url or jwks_file, issuer, audience)"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether jobs belong to callers (any mode but ``none``)."""
        return self.mode != "none"


class MetricsConfig(_Strict):
    """Prometheus metrics at ``/metrics`` (``server.manager.metrics``)."""

    enabled: bool = Field(
        default=True,
        description=(
            "Serve Prometheus metrics (jobs, run and queue times, the local pool, Prefect "
            "API calls, callbacks) at `path`; off, that path answers 404. With several "
            "server processes (gunicorn or uvicorn workers) set `PROMETHEUS_MULTIPROC_DIR` "
            "(`pygeoapi-prefect serve` does): see the Operating page, Metrics."
        ),
    )
    path: str = Field(
        default="/metrics",
        description=(
            "Where the metrics are served, below pygeoapi's `server.api_rules.url_prefix` "
            "like every other route."
        ),
    )

    @field_validator("path")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
            raise ValueError(f"must be a path like /metrics, got {value!r}")
        if value.split("/")[1] in ("processes", "jobs", "conformance"):
            raise ValueError(f"{value!r} is a route of OGC API - Processes")
        return value


class WatchConfig(_Strict):
    """The watcher of job ends made outside pygeoapi (``server.manager.watch``)."""

    enabled: bool | None = Field(
        default=None,
        description=(
            "Read Prefect's event feed for the ends of jobs that no pygeoapi process sees "
            "(a run cancelled in the Prefect UI or CLI, a run marked Crashed by the zombie "
            "automation or a worker, a deployed job's end), to publish their job event and "
            "count them in the metrics. Unset: on when pygeoapi's `pubsub` is configured "
            "or `metrics.enabled`; `false`: off (those ends publish nothing and deployed "
            "async jobs are not counted)."
        ),
    )
    interval: float = Field(
        default=5.0,
        ge=1,
        le=300,
        description=(
            "Seconds of one watch period. Each period one server process (whichever "
            "creates the Prefect variable `pygeoapi_watch_<id>_<period>` first) reads the "
            "events of one window of this length, so each end is handled once whatever "
            "the number of processes and hosts."
        ),
    )
    settle: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description=(
            "Seconds a window is left to settle before it is read: Prefect's event "
            "persister writes events in batches (every 5 s by default, "
            "`PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL`). An end is "
            "published `settle` to `settle + 2 × interval` seconds after it happened."
        ),
    )
    catch_up: float = Field(
        default=600.0,
        ge=0,
        le=86400,
        description=(
            "Seconds of windows that no process read (every server was down) that the "
            "next watcher still reads; older ends are never published. A fresh start "
            "with no earlier window reads only the current one."
        ),
    )
    max_events: int = Field(
        default=2000,
        ge=50,
        le=100_000,
        description=(
            "Events read from one window at most (bounded work per period); beyond it "
            "the rest of the window is skipped and a warning logged."
        ),
    )


class ManagerConfig(_Strict):
    """The whole ``server.manager`` block.

    Example::

        server:
          manager:
            name: pygeoapi_prefect.manager.PrefectManager
            connection: http://127.0.0.1:4200/api
            results:
              url: /var/lib/pygeoapi/results
            local:
              max_workers: 4
    """

    name: str = Field(description="The manager class: `pygeoapi_prefect.manager.PrefectManager`.")
    connection: str | None = Field(
        default=None,
        description=(
            "URL of the Prefect API (e.g. `http://127.0.0.1:4200/api`). Defaults to "
            "Prefect's own `PREFECT_API_URL` setting. Credentials (PREFECT_API_KEY, "
            "PREFECT_API_AUTH_STRING) always come from Prefect's settings."
        ),
    )
    api_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description=(
            "Seconds a single Prefect API request may take before the client gets a "
            "503 (the connect phase is capped at 3 s)."
        ),
    )
    api_write_concurrency: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Prefect API writes (creating runs, setting states) one pygeoapi server "
            "sends at once: all its worker processes together with `local.pool_scope: "
            "server` (the default), each worker process with `pool_scope: process`. 1 suits "
            "a Prefect server on SQLite, which serialises writes and slows down under "
            "parallel ones; raise it for PostgreSQL."
        ),
    )
    background_backlog: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description=(
            "Prefect writes made off the request path (run names, summary artifacts, "
            "sync jobs' log lines) that may wait at once in one pygeoapi process. They "
            "share the write slots (`api_write_concurrency`) with the jobs' own writes, "
            "which go first, so under sustained load they fall behind; past this many, "
            "run names and summaries are skipped (counted in "
            "`pygeoapi_prefect_background_skipped_total`) and a sync job's log lines "
            "are sent by its request. Bounds the memory they hold (a few KB each)."
        ),
    )
    drain_seconds: float = Field(
        default=5,
        ge=0,
        le=60,
        description=(
            "Seconds a stopping server process goes on with the Prefect writes still "
            "waiting, once its running jobs have stopped (`local.shutdown_grace`): "
            "records of sync jobs deferred by an outage, steps of accepted jobs retried "
            "through one, run names and summaries. What is left then is abandoned, with "
            "a WARNING: an async job left Pending or Running is taken up by recovery "
            "(its lease and heartbeat lapse), a sync job whose record was never written "
            "is lost from the job list (its client had the result). Keep "
            "`local.shutdown_grace` + this below the server's graceful timeout "
            "(gunicorn: 30 s)."
        ),
    )
    job_count_cache_seconds: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description=(
            "Seconds a job count (`numberMatched` of `GET /jobs`) is reused for the same "
            "filters. Prefect counts jobs by reading every run's tags, which grows with the "
            "number of runs (about 60-160 ms at 10,000 on SQLite); a few seconds of reuse "
            "keep busy job lists fast, at the price of a count that lags that long. "
            "0 counts on every request. A page shorter than `limit` needs no count at all."
        ),
    )
    validate_inputs: bool = Field(
        default=True,
        description=(
            "Check each execute request against the process description (required "
            "and unknown inputs, JSON schema types, enums, bounds, minOccurs/maxOccurs, "
            "unknown outputs) before a job is made; a mismatch answers 400 listing "
            "every problem. Turn off only for processes whose descriptions are wrong."
        ),
    )
    output_dir: str | None = Field(
        default=None,
        description="pygeoapi's own key; used as the result store when `results.url` is not set.",
    )
    results: ResultStoreConfig = Field(
        default_factory=ResultStoreConfig,
        description="Where job results are written; every instance serving the same jobs "
        "needs the same store.",
    )
    local: LocalExecutionConfig = Field(
        default_factory=LocalExecutionConfig,
        description="Jobs run next to pygeoapi (processes without a `deployment`).",
    )
    callbacks: CallbacksConfig = Field(
        default_factory=CallbacksConfig,
        description="Delivery of the OGC `subscriber` callbacks of execute requests.",
    )
    references: ReferencesConfig = Field(
        default_factory=ReferencesConfig,
        description="Resolving inputs given by reference (links) before the process runs.",
    )
    recovery: RecoveryConfig = Field(
        default_factory=RecoveryConfig,
        description="Leases on queued jobs, and their takeover when the holding process dies.",
    )
    heartbeat: HeartbeatConfig = Field(
        default_factory=HeartbeatConfig,
        description="Heartbeats of running jobs and the automation that fails jobs whose "
        "heartbeats stopped.",
    )
    deployments: DeploymentsConfig = Field(
        default_factory=DeploymentsConfig,
        description="Jobs of processes that run on a Prefect deployment (Prefect workers).",
    )
    publish: PublishConfig = Field(
        default_factory=PublishConfig,
        description="Listing tagged Prefect deployments as processes without a config entry.",
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,
        description="Bounds on the size and nesting of what clients send.",
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig,
        description="Prometheus metrics of jobs, the local pool, Prefect API calls and callbacks.",
    )
    logs: LogsConfig = Field(
        default_factory=LogsConfig,
        description="Job logs: capture, the per-job volume limit, `GET /jobs/{jobId}/logs`.",
    )
    prefect_ui: PrefectUIConfig = Field(
        default_factory=PrefectUIConfig,
        description="Flow run names and the job summary artifact in the Prefect UI.",
    )
    watch: WatchConfig = Field(
        default_factory=WatchConfig,
        description="Job ends made outside pygeoapi, read from Prefect's event feed "
        "(events and metrics).",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="Pruning finished jobs: their results and flow runs "
        "(`pygeoapi-prefect prune`, or a sweep in the server).",
    )
    auth: AuthConfig = Field(
        default_factory=AuthConfig,
        description="Callers' identity (from a proxy or bearer tokens) and per-user job spaces.",
    )
    processes: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Filled in by pygeoapi from the `resources` of type `process`: do not set it.",
    )

    @field_validator("results")
    @classmethod
    def _shared_store(cls, value: ResultStoreConfig) -> ResultStoreConfig:
        if value.url and value.url.startswith("memory://"):
            raise ValueError(
                "a memory:// result store lives inside one process, but async jobs run in "
                "worker processes: use a folder or object storage (results.url)"
            )
        return value

    @field_validator("connection")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL of the Prefect API, got {value!r}")
        if value is not None and "@" in value.split("/")[2]:
            # pygeoapi logs config values at DEBUG: no secret belongs here.
            raise ValueError(
                "must not hold credentials (user:password@); set PREFECT_API_KEY or "
                "PREFECT_API_AUTH_STRING in the environment instead"
            )
        return value.rstrip("/") if value else value

    def results_url(self) -> str:
        """The result store URL, with the documented fallbacks applied."""
        url = self.results.url or self.output_dir or DEFAULT_RESULTS_DIR
        if "://" not in url:
            url = Path(os.path.expanduser(url)).resolve().as_uri()
        return url

    def instance_id(self) -> str:
        """This instance's identity (``local.instance``, else host name and config path)."""
        if self.local.instance:
            return self.local.instance
        config = os.environ.get("PYGEOAPI_CONFIG")
        source = str(Path(config).resolve()) if config else self.results_url()
        digest = hashlib.sha256(source.encode()).hexdigest()[:12]
        return f"{socket.gethostname()}:{digest}"


def _shown(value: Any) -> str:
    # Only short scalars are echoed back: a mapping may hold credentials.
    if isinstance(value, str) and len(value) < 80:
        return f" (got {without_credentials(value)!r})"
    if isinstance(value, bool | int | float):
        return f" (got {value!r})"
    return ""


def load_config(manager_def: dict[str, Any]) -> ManagerConfig:
    """Validate pygeoapi's manager definition.

    Raises:
        ConfigError: naming each invalid key by its full YAML path.

    """
    try:
        return ManagerConfig.model_validate(manager_def)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join([YAML_PREFIX, *(str(part) for part in error["loc"])])
            problems.append(f"{key}: {error['msg']}{_shown(error.get('input'))}")
        raise ConfigError("invalid pygeoapi config: " + "; ".join(problems)) from exc
