"""A job process's client (execution/relay.py): its reports go to its server while it has one.

Against the real Prefect server: what is relayed never reaches Prefect from
here, everything else does, and so does every report once the pipe is closed.
"""

from __future__ import annotations

from typing import Any

from pygeoapi_prefect.execution.heartbeat import heartbeat_event
from pygeoapi_prefect.execution.relay import RELAY, RelayedAPI, is_relayed
from pygeoapi_prefect.prefect.states import state


def test_reports_are_relayed_until_the_pipe_closes_and_the_rest_is_sent(
    prefect_server, prefect_api
):
    run = prefect_api.create_flow_run(
        flow_name="relay-test", state=state("RUNNING"), tags=["relay-test"]
    )
    api = RelayedAPI(prefect_server.api_url)
    relayed: list[tuple[Any, ...]] = []
    pipe_open = [True]

    def send(message: tuple[Any, ...]) -> bool:
        if pipe_open[0]:
            relayed.append(message)
        return pipe_open[0]

    api.relay_through(send)
    api.update_labels(run["id"], {"relay.test": 1})
    api.request("POST", "/events", json=[heartbeat_event(run["id"])], budget=2)
    api.create_logs([])
    # Taken by the "server": in order, as it will send them, and not sent here.
    assert [(m[1], m[2]) for m in relayed] == [
        ("PATCH", f"/flow_runs/{run['id']}/labels"),
        ("POST", "/events"),
        ("POST", "/logs/"),
    ]
    assert all(is_relayed(m) and m[0] == RELAY for m in relayed)
    assert relayed[0][3] == {"relay.test": 1}
    assert "relay.test" not in prefect_api.read_flow_run(run["id"])["labels"]
    # A read is never relayed.
    assert api.read_flow_run(run["id"])["id"] == run["id"]

    # The server has gone: the job sends its reports itself, from now on.
    pipe_open[0] = False
    api.update_labels(run["id"], {"relay.test": 2})
    assert prefect_api.read_flow_run(run["id"])["labels"]["relay.test"] == 2
    pipe_open[0] = True
    api.update_labels(run["id"], {"relay.test": 3})
    assert prefect_api.read_flow_run(run["id"])["labels"]["relay.test"] == 3
    assert len(relayed) == 3
    api.close()


def test_an_outcome_is_not_a_relayed_write():
    from pygeoapi_prefect.execution.execute import Outcome

    assert not is_relayed(Outcome(ok=True))
    assert not is_relayed(None)
