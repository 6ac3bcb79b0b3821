"""Prefect's API settings read without importing Prefect, checked against Prefect's own reading.

Each case runs a fresh interpreter in a folder of its own (Prefect reads
``.env``, ``prefect.toml`` and ``pyproject.toml`` from the working directory)
with its own environment and ``PREFECT_HOME``. It prints what
:func:`~pygeoapi_prefect.prefect.api_settings.api_settings` gives, whether that
imported Prefect, and then what Prefect itself reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = """
import dataclasses, json, sys
from pygeoapi_prefect.prefect.api_settings import api_settings, _from_prefect
ours = dataclasses.asdict(api_settings())
imported = "prefect.settings" in sys.modules
theirs = dataclasses.asdict(_from_prefect())
print(json.dumps({"ours": ours, "imported": imported, "prefect": theirs}))
"""

PROFILE = """
active = "work"

[profiles.work]
PREFECT_API_URL = "http://profile.example/api"
PREFECT_API_KEY = "profile-key"
PREFECT_API_TLS_INSECURE_SKIP_VERIFY = true

[profiles.other]
PREFECT_API_URL = "http://other.example/api"
"""


def _probe(tmp_path: Path, env: dict[str, str], files: dict[str, str]) -> dict:
    folder = tmp_path / "cwd"
    folder.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    for name, text in files.items():
        path = home / "profiles.toml" if name == "profiles.toml" else folder / name
        path.write_text(text)
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("PREFECT_") and key != "SSL_CERT_FILE"
    }
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=folder,
        env={**clean, "PREFECT_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("env", "files", "without_prefect"),
    [
        ({}, {}, True),
        (
            {
                "PREFECT_API_URL": "http://env.example/api",
                "PREFECT_API_AUTH_STRING": "user:secret",
                "PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "yes",
            },
            {},
            True,
        ),
        ({"PREFECT_API_URL": "http://env.example/api"}, {"profiles.toml": PROFILE}, True),
        ({"PREFECT_PROFILE": "other"}, {"profiles.toml": PROFILE}, True),
        ({"PREFECT_PROFILE": "missing"}, {"profiles.toml": PROFILE}, True),
        ({"SSL_CERT_FILE": "/etc/ssl/bundle.pem"}, {}, True),
        ({}, {"pyproject.toml": '[project]\nname = "x"\n'}, True),
        ({"PREFECT_API_URL": "https://prefect.example/base/api/"}, {}, True),
        (
            {"PREFECT_API_URL": "http://env.example/api", "PREFECT_UI_URL": "https://ui.example"},
            {},
            True,
        ),
        # Sources this leaves to Prefect:
        ({}, {".env": "PREFECT_API_KEY=dotenv-key\n"}, False),
        ({}, {"prefect.toml": '[api]\nurl = "http://toml.example/api"\n'}, False),
        ({}, {"pyproject.toml": '[tool.prefect.api]\nkey = "pyproject-key"\n'}, False),
        ({"prefect_api_key": "lower-case"}, {}, False),
        ({"PREFECT_API_URL": "https://api.prefect.cloud/api/accounts/a/workspaces/w"}, {}, False),
        ({"PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "maybe"}, {}, False),
    ],
    ids=[
        "nothing set",
        "environment",
        "environment over profile",
        "profile named by PREFECT_PROFILE",
        "profile not in the file",
        "SSL_CERT_FILE default",
        "pyproject without tool.prefect",
        "UI inferred from an API URL with a path",
        "PREFECT_UI_URL",
        ".env",
        "prefect.toml",
        "pyproject tool.prefect",
        "lower-case name",
        "Prefect Cloud",
        "not a bool",
    ],
)
def test_reads_what_prefect_reads(tmp_path, env, files, without_prefect):
    if env.get("PREFECT_API_TLS_INSECURE_SKIP_VERIFY") == "maybe":
        # Prefect refuses the value; so does our reading, through Prefect.
        with pytest.raises(subprocess.CalledProcessError) as failed:
            _probe(tmp_path, env, files)
        assert "tls_insecure_skip_verify" in failed.value.stderr
        return
    seen = _probe(tmp_path, env, files)
    assert seen["ours"] == seen["prefect"]
    assert seen["imported"] is not without_prefect
    if files.get("profiles.toml") and "PREFECT_PROFILE" not in env:
        assert seen["ours"]["key"] == "profile-key"  # the profile was really read
        assert seen["ours"]["tls_insecure_skip_verify"] is True


def test_the_credentials_are_not_in_a_repr():
    from pygeoapi_prefect.prefect.api_settings import ApiSettings

    shown = repr(ApiSettings(url="http://x/api", auth_string="user:secret", key="key-secret"))
    assert "http://x/api" in shown and "secret" not in shown
