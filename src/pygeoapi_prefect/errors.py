"""Errors raised by pygeoapi-prefect, and how they map onto OGC exceptions.

The tree::

    PrefectManagerError (pygeoapi ProcessorGenericError)
     ├── ConfigError                 start-up only: the manager config is invalid
     ├── InvalidParameter            a bad job-list filter (status=..., datetime=...): 400
     ├── InvalidRequestBody          an execute body that is not a usable JSON object: 400
     ├── RequestTooLarge             a request body over server.manager.limits: 413
     ├── NotAuthenticated            no (valid) identity where server.manager.auth needs one: 401
     ├── IdentityProviderUnavailable the identity provider's keys cannot be read: 503
     ├── JobNotFound                 also a pygeoapi JobNotFoundError: 404
     ├── ResultNotFound              no results stored for the job: 404
     ├── NoSuchOutput                the job has no output of that id: 404
     ├── ResultNotReady              the job has not finished yet: 404
     └── ExecuteError                also a pygeoapi ProcessorExecuteError
          ├── InvalidInputs          the execute request does not match the process: 400
          ├── ProcessFailed          the process raised during sync execution: 500 (or its own)
          ├── PrefectUnavailable     the Prefect API cannot be reached: 503
          │    └── PrefectAuthFailed the Prefect API refused our credentials (401/403): 503
          ├── DeploymentMissing      the process's deployment is not in Prefect: 503
          ├── JobStillRunning        a sync deployment job outlived its wait: 504
          ├── PrefectRequestFailed   the Prefect API answered with an error: 502
          └── ResultStoreError       the result store cannot be read or written: 503

Every concrete class also inherits the pygeoapi class that pygeoapi's API layer
already catches, so a client gets the mapped HTTP status and OGC exception code.
Where pygeoapi's API layer catches nothing (the job list, job status), the
HTTP contract (:mod:`pygeoapi_prefect.web.contract`) does the same mapping.
"""

from __future__ import annotations

from http import HTTPStatus

from pygeoapi.process.base import (
    JobNotFoundError,
    ProcessorExecuteError,
    ProcessorGenericError,
)

__all__ = [
    "EXCEPTION_TYPES",
    "ConfigError",
    "DeploymentMissing",
    "JobStillRunning",
    "ExecuteError",
    "InvalidInputs",
    "InvalidParameter",
    "InvalidRequestBody",
    "IdentityProviderUnavailable",
    "JobNotFound",
    "NoSuchOutput",
    "NotAuthenticated",
    "PrefectAuthFailed",
    "PrefectManagerError",
    "PrefectRequestFailed",
    "PrefectUnavailable",
    "ProcessFailed",
    "RequestTooLarge",
    "ResultNotFound",
    "ResultNotReady",
    "ResultStoreError",
]


_EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
#: pygeoapi's short exception codes that OGC API - Processes 1.0 gives a URI.
EXCEPTION_TYPES = {
    "NoSuchProcess": _EXCEPTIONS + "no-such-process",
    "NoSuchJob": _EXCEPTIONS + "no-such-job",
    "ResultNotReady": _EXCEPTIONS + "result-not-ready",
    "NoSuchOutput": _EXCEPTIONS + "no-such-output",
}


class PrefectManagerError(ProcessorGenericError):
    """Root of every error this package raises."""

    def __init__(self, msg: str | None = None, *, user_msg: str | None = None) -> None:
        super().__init__(msg, user_msg=user_msg or msg)


class ConfigError(PrefectManagerError, ValueError):
    """The ``server.manager`` configuration is invalid (raised at start-up)."""


class InvalidParameter(PrefectManagerError, ValueError):
    """A job-list query parameter has a value that cannot be used."""

    ogc_exception_code = "InvalidParameterValue"
    http_status_code = HTTPStatus.BAD_REQUEST


class InvalidRequestBody(PrefectManagerError, ValueError):
    """An execute request body is not valid UTF-8 JSON of the OGC shape, or is nested too deep."""

    ogc_exception_code = "InvalidParameterValue"
    http_status_code = HTTPStatus.BAD_REQUEST


class RequestTooLarge(PrefectManagerError):
    """A request body is larger than ``server.manager.limits.max_request_bytes``."""

    ogc_exception_code = "RequestTooLarge"
    http_status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class NotAuthenticated(PrefectManagerError):
    """The request has no identity, or an invalid one, where ``server.manager.auth`` needs one.

    The message says what is wrong (missing, expired, wrong audience...)
    without echoing the credential. ``challenge`` is the ``WWW-Authenticate``
    header of the answer.
    """

    ogc_exception_code = "NotAuthenticated"
    http_status_code = HTTPStatus.UNAUTHORIZED

    def __init__(self, msg: str, *, challenge: str | None = None) -> None:
        super().__init__(msg)
        self.challenge = challenge


class IdentityProviderUnavailable(PrefectManagerError):
    """The identity provider's key set cannot be read, and none was read before."""

    ogc_exception_code = "IdentityProviderUnavailable"
    http_status_code = HTTPStatus.SERVICE_UNAVAILABLE


class JobNotFound(PrefectManagerError, JobNotFoundError):
    """No pygeoapi job has this id (unknown, malformed, or dismissed)."""

    ogc_exception_code = "NoSuchJob"
    http_status_code = HTTPStatus.NOT_FOUND


class ResultNotFound(PrefectManagerError):
    """The job has no results in the result store (never made, or dismissed).

    Not a pygeoapi ``JobResultNotFoundError`` on purpose: pygeoapi answers
    that with a 500, and a missing result is the client's 404.
    """

    ogc_exception_code = "NoSuchJob"
    http_status_code = HTTPStatus.NOT_FOUND


class NoSuchOutput(PrefectManagerError):
    """``GET /jobs/{id}/results/{outputId}`` names an output the job does not have."""

    ogc_exception_code = "NoSuchOutput"
    http_status_code = HTTPStatus.NOT_FOUND


class ResultNotReady(PrefectManagerError):
    """The job's results were asked for before it finished."""

    ogc_exception_code = "ResultNotReady"
    http_status_code = HTTPStatus.NOT_FOUND


class ExecuteError(PrefectManagerError, ProcessorExecuteError):
    """Base of the errors that pygeoapi's execute endpoint maps itself."""


class InvalidInputs(ExecuteError):
    """The execute request does not match the process description; no job was made."""

    ogc_exception_code = "InvalidParameterValue"
    http_status_code = HTTPStatus.BAD_REQUEST

    def __init__(self, msg: str, *, problems: list[str] | None = None) -> None:
        super().__init__(msg)
        self.problems = list(problems or [])


class ProcessFailed(ExecuteError):
    """The process raised while running synchronously; the job is recorded as failed.

    The inputs passed validation, so this is the server's failure: 500
    ``NoApplicableCode``, unless the process raised a pygeoapi error carrying
    a status of its own (a process author's 400 for inputs it cannot use).
    ``job_id`` is the failed job, which the client can read at ``/jobs/{id}``.
    """

    ogc_exception_code = "NoApplicableCode"
    http_status_code = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(
        self,
        msg: str,
        *,
        job_id: str | None = None,
        http_status: int | None = None,
        ogc_code: str | None = None,
    ) -> None:
        super().__init__(msg)
        self.job_id = job_id
        if http_status is not None:
            self.http_status_code = HTTPStatus(http_status)
        if ogc_code is not None:
            self.ogc_exception_code = ogc_code


class PrefectUnavailable(ExecuteError):
    """The Prefect API did not answer (refused, timed out, or 503)."""

    ogc_exception_code = "NoApplicableCode"
    http_status_code = HTTPStatus.SERVICE_UNAVAILABLE


class PrefectAuthFailed(PrefectUnavailable):
    """The Prefect API refused the credentials sent (or their absence) with 401 or 403.

    A 503 for the client, as for an unreachable Prefect: the service cannot
    work until the operator fixes ``PREFECT_API_AUTH_STRING`` or
    ``PREFECT_API_KEY``. The message names the setting, never its value.
    """


class DeploymentMissing(ExecuteError):
    """The process runs on a Prefect deployment that Prefect does not have."""

    ogc_exception_code = "NoApplicableCode"
    http_status_code = HTTPStatus.SERVICE_UNAVAILABLE


class JobStillRunning(ExecuteError):
    """A sync request stopped waiting for its job, which goes on."""

    ogc_exception_code = "NoApplicableCode"
    http_status_code = HTTPStatus.GATEWAY_TIMEOUT


class PrefectRequestFailed(ExecuteError):
    """The Prefect API answered a request with an unexpected error status."""

    ogc_exception_code = "NoApplicableCode"
    http_status_code = HTTPStatus.BAD_GATEWAY

    def __init__(self, msg: str, *, status: int | None = None) -> None:
        super().__init__(msg)
        self.status = status


class ResultStoreError(ExecuteError):
    """The result store could not be read or written."""

    ogc_exception_code = "NoApplicableCode"
    http_status_code = HTTPStatus.SERVICE_UNAVAILABLE
