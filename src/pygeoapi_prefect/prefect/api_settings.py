"""The Prefect settings this package reads, without importing Prefect when that is exact.

A server process needs Prefect's ``PREFECT_API_URL``, ``PREFECT_API_AUTH_STRING``,
``PREFECT_API_KEY``, ``PREFECT_API_TLS_INSECURE_SKIP_VERIFY`` and
``PREFECT_API_SSL_CERT_FILE`` to talk to the API, and ``PREFECT_UI_URL`` for
the links to the Prefect UI in job documents. Importing ``prefect.settings``
imports most of Prefect: ~1.5 s and ~40 MiB in every server process (each
gunicorn or uvicorn worker) whose config runs no Prefect flow in it.

Prefect 3 reads a setting from, highest first: the environment (names in any
case), ``./.env``, ``./prefect.toml``, ``./pyproject.toml`` (``[tool.prefect]``),
then the active profile of ``profiles.toml`` (``PREFECT_PROFILES_PATH``, else
``$PREFECT_HOME/profiles.toml``, else ``~/.prefect/profiles.toml``; without
such a file, Prefect's own ``ephemeral`` profile, which sets none of
them). :func:`api_settings` reads the environment and the profile itself
when no other source exists; otherwise, or once Prefect is imported in this
process (its settings may then be changed in the process), or for Prefect
Cloud (whose UI address Prefect infers by rules of its own), it asks Prefect.

Example::

    settings = api_settings()
    settings.url, settings.key  # None when not set
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ApiSettings", "api_settings"]

_NAMES = tuple(
    f"PREFECT_{name}"
    for name in (
        "API_URL",
        "API_AUTH_STRING",
        "API_KEY",
        "API_TLS_INSECURE_SKIP_VERIFY",
        "API_SSL_CERT_FILE",
        "UI_URL",
    )
)
#: Set anywhere, these make the UI's address Prefect Cloud's business: Prefect decides.
_CLOUD = ("PREFECT_CLOUD_API_URL", "PREFECT_CLOUD_UI_URL")
_CLOUD_HOST = "prefect.cloud"
#: What pydantic reads as a bool (case-insensitive).
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_TEST_MODES = (
    "PREFECT_TEST_MODE",
    "PREFECT_UNIT_TEST_MODE",
    "PREFECT_TESTING_UNIT_TEST_MODE",
    "PREFECT_TESTING_TEST_MODE",
)


@dataclass(frozen=True)
class ApiSettings:
    """Prefect's API settings (``None``: not set)."""

    url: str | None = None
    #: Secrets: never in a repr (a log line, a traceback's locals).
    auth_string: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    tls_insecure_skip_verify: bool = False
    ssl_cert_file: str | None = None
    #: ``PREFECT_UI_URL``, or as Prefect infers it from the API's.
    ui_url: str | None = None


#: What :func:`_without_prefect` found, by what it depends on (Prefect too
#: reads its files once: the settings are built when it is imported).
_FOUND: dict[tuple[str | None, ...], ApiSettings | None] = {}
_INPUTS = (
    *_NAMES,
    *_CLOUD,
    *_TEST_MODES,
    "PREFECT_HOME",
    "PREFECT_PROFILES_PATH",
    "PREFECT_PROFILE",
    "SSL_CERT_FILE",
)


def api_settings() -> ApiSettings:
    """The settings as Prefect reads them (see the module's text for when it is asked).

    Cheap to call often (job documents' UI links): what the environment and
    the profile give is kept for as long as they and the working directory
    stay the same.
    """
    if "prefect.settings" not in sys.modules:
        key = (os.getcwd(), *(os.environ.get(name) for name in _INPUTS))
        if key not in _FOUND:
            _FOUND[key] = _without_prefect()
        found = _FOUND[key]
        if found is not None:
            return found
    return _from_prefect()


def _from_prefect() -> ApiSettings:
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    api = settings.api
    return ApiSettings(
        url=api.url,
        auth_string=api.auth_string.get_secret_value() if api.auth_string else None,
        key=api.key.get_secret_value() if api.key else None,
        tls_insecure_skip_verify=api.tls_insecure_skip_verify,
        ssl_cert_file=api.ssl_cert_file,
        ui_url=settings.ui_url,
    )


def _without_prefect() -> ApiSettings | None:
    # None where this would not be sure to read what Prefect reads.
    values: dict[str, Any] = {}
    for name, value in os.environ.items():
        upper = name.upper()
        if upper in _CLOUD:
            return None
        if upper in _NAMES:
            if name != upper:
                return None  # Prefect reads names in any case: let it decide
            values[upper] = value
    if len(values) < len(_NAMES) and not _profile_only(values):
        return None
    skip = values.pop("PREFECT_API_TLS_INSECURE_SKIP_VERIFY", False)
    if not isinstance(skip, bool):
        text = str(skip).strip().lower()
        if text not in _TRUE | _FALSE:
            return None  # Prefect would refuse it: let it say so
        skip = text in _TRUE
    if not all(isinstance(value, str) for value in values.values()):
        return None
    url = values.get("PREFECT_API_URL")
    if url and _CLOUD_HOST in url:
        return None
    return ApiSettings(
        url=url,
        auth_string=values.get("PREFECT_API_AUTH_STRING"),
        key=values.get("PREFECT_API_KEY"),
        tls_insecure_skip_verify=skip,
        # Prefect's default: SSL_CERT_FILE, as it was when Prefect is imported.
        ssl_cert_file=values.get("PREFECT_API_SSL_CERT_FILE") or os.environ.get("SSL_CERT_FILE"),
        ui_url=values.get("PREFECT_UI_URL") or _ui_of(url),
    )


def _ui_of(api_url: str | None) -> str | None:
    # The UI of a self-hosted API, as Prefect infers it: the API's address
    # without its /api (Prefect Cloud's is left to Prefect).
    if not api_url:
        return None
    ui_url = api_url[:-4] if api_url.endswith("/api") else api_url
    ui_url = ui_url.replace("/api/", "/")
    return ui_url.replace("/accounts/", "/account/").replace("/workspaces/", "/workspace/")


def _profile_only(values: dict[str, Any]) -> bool:
    # Fill in from the active profile what the environment did not set; False
    # if a file between the two (.env, prefect.toml, pyproject.toml) may set it.
    if Path(".env").is_file() or Path("prefect.toml").exists():
        return False
    if Path("pyproject.toml").exists():
        try:
            project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return False
        if "prefect" in (project.get("tool") or {}):
            return False
    if any(os.environ.get(mode) for mode in _TEST_MODES):
        return False
    path = _profiles_path()
    if not path.exists():
        return True  # Prefect's own profile: none of the five
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active")
    profile = (profiles.get("profiles") or {}).get(active) if isinstance(active, str) else None
    if not isinstance(profile, dict):
        return True  # not in the file: Prefect's own profile
    if any(profile.get(name) is not None for name in _CLOUD):
        return False
    for name in _NAMES:  # Prefect looks its keys up as written: upper case
        if profile.get(name) is not None:
            values.setdefault(name, profile[name])
    return True


def _profiles_path() -> Path:
    # As Prefect finds it when no .env or TOML file names another.
    if os.environ.get("PREFECT_PROFILES_PATH"):
        return Path(os.environ["PREFECT_PROFILES_PATH"])
    if os.environ.get("PREFECT_HOME"):
        return Path(os.environ["PREFECT_HOME"]) / "profiles.toml"
    return Path.home() / ".prefect" / "profiles.toml"
