"""The one rule for which option names hold credentials.

Used wherever options may hold secrets: the result store hides their values
in its errors and logs (:mod:`pygeoapi_prefect.jobs.results`), and
``deploy-process-as-flow`` refuses to write them into generated flow code
(:mod:`pygeoapi_prefect.cli.deploy`). A name is a credential when, in lower
case, it is one of the known names of the storage libraries, or contains one
of the generic words:

- AWS (s3fs, boto): ``key``, ``secret``, ``token``, ``aws_access_key_id``,
  ``aws_secret_access_key``, ``session_token``, ``aws_session_token``;
- Google Cloud Storage (gcsfs): ``token`` (a token, or a credentials file or
  its JSON), ``credentials``, service account files and info;
- Azure (adlfs): ``account_key``, ``connection_string``, ``sas_token``,
  ``client_secret``, ``credential``;
- generic: any name containing ``password``, ``passwd``, ``token``,
  ``secret``, ``key``, ``credential``, ``sas_``, ``connection_string``,
  ``service_account`` or ``private``.

The rule errs on the side of secrecy: an identifier such as
``sse_kms_key_id`` counts too (pass it the same way as a secret).

Example::

    credential_keys({"anon": False, "client_kwargs": {"aws_secret_access_key": "x"}})
    # ["client_kwargs.aws_secret_access_key"]
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["KNOWN_CREDENTIAL_KEYS", "credential_keys", "credential_values", "is_credential_key"]

#: Names the storage libraries use for credentials (each also matches the pattern).
KNOWN_CREDENTIAL_KEYS = frozenset(
    {
        # AWS
        "key",
        "secret",
        "token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "session_token",
        "aws_session_token",
        # Google Cloud Storage
        "credentials",
        "service_account_file",
        "service_account_info",
        # Azure
        "account_key",
        "connection_string",
        "sas_token",
        "client_secret",
        "credential",
        # generic
        "password",
        "passwd",
    }
)
_GENERIC = re.compile(
    r"password|passwd|token|secret|key|credential|sas_|connection_string|service_account|private",
    re.IGNORECASE,
)


def is_credential_key(name: object) -> bool:
    """True if an option called ``name`` holds (or names) a credential."""
    text = str(name).lower()
    return text in KNOWN_CREDENTIAL_KEYS or bool(_GENERIC.search(text))


def credential_keys(value: Any, path: str = "") -> list[str]:
    """The dotted paths of every credential key in nested mappings and lists."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if is_credential_key(key):
                found.append(here)
            else:
                found += credential_keys(item, here)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found += credential_keys(item, f"{path}[{index}]")
    return found


def credential_values(value: Any) -> list[str]:
    """Every string held under a credential key, at any depth (to hide them)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if is_credential_key(key):
                found += _strings(item)
            else:
                found += credential_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found += credential_values(item)
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return [str(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []
