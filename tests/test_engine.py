"""The process-wide engine: shared by managers, rebuilt after fork, closed on signals.

Real Prefect (the session's server), real worker processes; the fork and
signal cases run in a child interpreter of their own.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from faults import until
from pygeoapi.util import RequestedProcessExecutionMode

from pygeoapi_prefect.errors import JobNotFound
from pygeoapi_prefect.execution import engine as engines
from pygeoapi_prefect.execution.leases import Leases, claim, new_holder_id
from pygeoapi_prefect.manager import PrefectManager
from pygeoapi_prefect.prefect.states import state

RESPOND_ASYNC = RequestedProcessExecutionMode.respond_async


@pytest.fixture(autouse=True)
def _closed_engines():
    """Engines built in this test process are closed while Prefect still runs."""
    yield
    engines.close_all()


def _definition(prefect_server: Any, tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "pygeoapi_prefect.manager.PrefectManager",
        "connection": prefect_server.api_url,
        "results": {"url": str(tmp / "results")},
        "local": {"max_workers": 2, "shutdown_grace": 5},
        "processes": {"hello-world": {"type": "process", "processor": {"name": "HelloWorld"}}},
        **extra,
    }


def _ours() -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith(("pygeoapi-prefect", "heartbeat"))
    ]


def test_managers_of_one_config_share_one_engine_and_pool(prefect_server, tmp_path):
    # What pygeoapi's Django views do: a new API, so a new manager, per request.
    definition = _definition(prefect_server, tmp_path)
    before = set(multiprocessing.active_children())
    managers = [PrefectManager(definition) for _ in range(6)]
    try:
        async_ids = [
            m.execute_process("hello-world", {"name": f"a{i}"}, execution_mode=RESPOND_ASYNC)[0]
            for i, m in enumerate(managers[:3])
        ]
        for i, manager in enumerate(managers[3:]):
            job_id, _, outputs, status, _ = manager.execute_process(
                "hello-world", {"name": f"s{i}"}
            )
            assert outputs == {"id": "echo", "value": f"Hello s{i}!"}
        for job_id in async_ids:
            until(
                lambda job_id=job_id: managers[0].get_job(job_id)["status"] == "successful",
                60,
                f"job {job_id}",
            )
        assert len({id(m.engine) for m in managers}) == 1
        pool = set(multiprocessing.active_children()) - before
        assert len(pool) == 1  # one template process forks the jobs, not one per manager
        threads = _ours()
        # At most max_workers pool threads and the cancel check, timers, engine, a few helpers.
        assert len(threads) <= 13, threads
    finally:
        managers[0].close()
    assert not set(multiprocessing.active_children()) - before


def test_claims_let_one_holder_start_a_job_once(prefect_server, prefect_api):
    run = prefect_api.create_flow_run(
        flow_name="claims-test", state=state("PENDING"), tags=["claims-test"]
    )
    holders = [new_holder_id() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda h: claim(prefect_api, run["id"], h, name=h), holders))
    winners = [a.holder for a in answers if a.won]
    assert len(winners) == 1
    assert {a.holder for a in answers} == set(winners)  # the losers learn who won
    assert claim(prefect_api, run["id"], winners[0], name="again").won  # idempotent
    prefect_api.set_state(run["id"], state("RUNNING"))
    prefect_api.set_state(run["id"], state("COMPLETED"))
    # Prefect would accept Running again now; the claim does not.
    assert not claim(prefect_api, run["id"], new_holder_id(), name="late").won


def test_leases_tell_live_holders_from_released_ones(prefect_api):
    mine, other = Leases(prefect_api, new_holder_id(), 60), Leases(prefect_api, new_holder_id(), 60)
    mine.renew()
    other.renew()
    live, _ = mine.live_holders()
    assert {mine.holder, other.holder} <= live
    other.release()
    live, _ = mine.live_holders()
    assert mine.holder in live and other.holder not in live
    mine.release()


def test_update_job_respects_dismissal(prefect_server, tmp_path):
    manager = PrefectManager(_definition(prefect_server, tmp_path))
    job_id = manager.add_job({"process_id": "hello-world", "status": "running"})
    assert manager.get_job(job_id)["status"] == "running"
    assert manager.update_job(job_id, {"progress": 40, "message": "on its way"})
    assert manager.get_job(job_id)["progress"] == 40
    # Cancelled in the Prefect UI: a dismissed job, which no update brings back.
    manager.api.set_state(job_id, state("CANCELLED", "stopped in Prefect"), force=True)
    assert manager.update_job(job_id, {"status": "successful", "progress": 100}) is False
    job = manager.get_job(job_id)
    assert (job["status"], job["progress"]) == ("dismissed", 40)
    # Dismissed through the OGC API: gone.
    manager.delete_job(job_id)
    with pytest.raises(JobNotFound):
        manager.update_job(job_id, {"progress": 50})


_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pygeoapi_prefect.execution import engine as engines
    from pygeoapi_prefect.manager import PrefectManager

    definition = json.loads(sys.argv[1])
    manager = PrefectManager(definition)
    calls = []
    signal.signal(signal.SIGTERM, lambda s, f: calls.append("server's handler"))
    engines.autostart(manager)             # the app's import, in the main thread
    parent = manager.engine
    parent.api.request("GET", "/health")
    pid = os.fork()
    if pid == 0:                           # a gunicorn worker forked after the import
        child = manager.engine
        child.api.request("GET", "/health")
        print(json.dumps({"child_pid": os.getpid(), "engine_pid": child.pid,
                          "new": child is not parent, "holder": child.holder != parent.holder,
                          "started": child._started}), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    os.kill(os.getpid(), signal.SIGTERM)   # the server's handler runs, after ours
    time.sleep(0.2)
    print(json.dumps({"calls": calls, "stopping": parent._stopping.is_set()}), flush=True)
    """
)


def test_fork_builds_a_new_engine_and_sigterm_chains_the_server_handler(prefect_server, tmp_path):
    definition = _definition(prefect_server, tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(definition)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    child, parent = (json.loads(line) for line in result.stdout.splitlines()[-2:])
    assert child["engine_pid"] == child["child_pid"]
    assert child["new"] and child["holder"] and child["started"]
    assert parent == {"calls": ["server's handler"], "stopping": True}
    # Python warns when a process with threads forks; the parent had them, so
    # the warning may come, but the child never used the parent's engine.


def test_a_process_starts_a_job_once_even_if_it_reaches_it_twice(prefect_server, tmp_path):
    engine = PrefectManager(_definition(prefect_server, tmp_path)).engine
    assert engine.first_start("a") and not engine.first_start("a") and engine.first_start("b")


def test_no_engine_is_shared_across_configs(prefect_server, tmp_path):
    one = PrefectManager(_definition(prefect_server, tmp_path / "one"))
    two = PrefectManager(_definition(prefect_server, tmp_path / "two"))
    assert one.engine is not two.engine
    assert one.engine is PrefectManager(_definition(prefect_server, tmp_path / "one")).engine
    assert engines.engine_for(one.config) is one.engine
