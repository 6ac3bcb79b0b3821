"""How PrefectServer configures the Prefect server it starts."""

from __future__ import annotations

import os

from prefect.settings import get_current_settings

from pygeoapi_prefect.prefect.server import UNUSED_SERVICES, PrefectServer


def test_unused_services_are_prefect_services_and_are_turned_off(tmp_path):
    services = get_current_settings().server.services
    for name in UNUSED_SERVICES:
        assert hasattr(getattr(services, name), "enabled"), name
    assert "task_run_recorder" not in UNUSED_SERVICES
    env = PrefectServer(tmp_path, disabled_services=UNUSED_SERVICES).environment()
    for name in UNUSED_SERVICES:
        assert env[f"PREFECT_SERVER_SERVICES_{name.upper()}_ENABLED"] == "false"


def test_all_services_run_by_default(tmp_path):
    env = PrefectServer(tmp_path).environment()
    for name in UNUSED_SERVICES:
        key = f"PREFECT_SERVER_SERVICES_{name.upper()}_ENABLED"
        assert env.get(key) == os.environ.get(key)  # as the caller's environment says
