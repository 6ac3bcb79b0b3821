"""Outbound HTTP to user-given URLs: checked addresses only, bounded, and quiet about URLs.

Real HTTP listeners on loopback addresses; DNS is the one thing faked
(``socket.getaddrinfo`` for a few test names, see tests/netsafe_helpers.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import TESTS, Pygeoapi, pygeoapi_config, server_env, spawn_serve
from netsafe_helpers import DeadTarget, FakeDNS, Listener, fake_dns_site, tls_contexts
from ogc import validate

from pygeoapi_prefect.config import load_config
from pygeoapi_prefect.destinations import (
    DestinationRefused,
    Destinations,
    ResponseTooLarge,
)
from pygeoapi_prefect.errors import InvalidInputs
from pygeoapi_prefect.execution.callbacks import THREAD_NAME, CallbackPolicy
from pygeoapi_prefect.prefect.server import free_port

PUBLIC = "93.184.215.14"  # is_global: what a rebinding name answers first
TOKEN_PATH = "cb-path-t0ken-6f1e"
TOKEN_QUERY = "sig-query-t0ken-a9d2"


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS({})
    monkeypatch.setattr("socket.getaddrinfo", fake)
    return fake


@pytest.fixture
def listeners():
    started: list[Listener] = []

    def start(*args, **kwargs) -> Listener:
        listener = Listener(*args, **kwargs)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.close()


def _url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://{host}:{port}/{TOKEN_PATH}?t={TOKEN_QUERY}"


# -- what is internal -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud metadata
        "http://100.64.0.1/",  # shared address space (is_private is False)
        "http://100.127.255.254/",
        "http://198.18.0.1/",  # benchmarking (198.18.0.0/15)
        "http://198.19.255.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",  # AWS IPv6 metadata
        "http://192.0.0.170/",
        "http://224.0.0.1/",
        "http://239.255.255.250:1900/",
        "http://255.255.255.255/",
        "http://240.0.0.1/",
        "http://[fec0::1]/",
        "http://[ff02::1]/",
        "http://[::ffff:100.100.100.200]/",
        "http://[64:ff9b::6464:64c8]/",  # NAT64 of 100.100.100.200
        "http://[2002:6464:64c8::]/",  # 6to4 of it
        "http://1684301000/",  # 100.100.100.200, in decimal
        "http://0x64646464/",  # 100.100.100.100, in hex
    ],
)
def test_shared_address_space_metadata_and_other_internal_addresses(url: str) -> None:
    problem = Destinations(allow_key="server.manager.callbacks.allow").problem(url)
    assert problem is not None and "internal address" in problem, problem
    assert "server.manager.callbacks.allow" in problem
    assert "meta-data" not in problem  # no path in the text


@pytest.mark.parametrize(
    "url",
    [
        "http://8.8.8.8/x",
        f"https://{PUBLIC}/cb",
        "http://[2606:4700:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
    ],
)
def test_public_addresses_pass(url: str) -> None:
    assert Destinations().problem(url) is None


def test_allow_lets_networks_and_names_in(dns: FakeDNS) -> None:
    dns.answers["hooks.internal"] = dns.answers["hooks.internal."] = ["10.9.8.7"]
    destinations = Destinations(["100.64.0.0/10", "hooks.internal"])
    assert destinations.problem("http://100.100.100.200/x") is None
    assert destinations.problem("http://hooks.internal./x") is None
    assert destinations.problem("http://198.18.0.1/x") is not None


# -- rebinding --------------------------------------------------------------


def test_rebinding_to_loopback_never_reaches_it(dns: FakeDNS, listeners) -> None:
    """The issue's case: public at the check, 127.0.0.1 on the next lookup."""
    loopback = listeners("127.0.0.1")
    dns.answers["rebind.test"] = [PUBLIC, "127.0.0.1"]
    policy = CallbackPolicy(retries=2, timeout=5)
    subscriber = {"successUri": _url("rebind.test", loopback.port)}
    policy.check(subscriber)  # lookup 1: public, accepted
    delivery = policy.send(subscriber, "successUri", {"x": 1}, job="j-rebind")
    assert delivery is not None and delivery.wait(60)
    assert delivery.outcome == "refused"
    assert loopback.calls == []
    assert dns.lookups == [("rebind.test", PUBLIC), ("rebind.test", "127.0.0.1")]
    policy.close(5)


@pytest.mark.parametrize("allowed_lookups", [1, 2, 3])
def test_each_connection_goes_to_the_address_checked_for_it(
    dns: FakeDNS, listeners, allowed_lookups: int
) -> None:
    # 127.0.0.2 stands for a public address (allowed), 127.0.0.1 for the
    # internal target; both listen on the same port. A second check before
    # the connection (the old code) let the third lookup reach 127.0.0.1.
    target = listeners("127.0.0.1")
    allowed = listeners("127.0.0.2", target.port)
    dns.answers["rebind.test"] = ["127.0.0.2"] * allowed_lookups + ["127.0.0.1"]
    policy = CallbackPolicy(["127.0.0.2/32"], retries=0, timeout=5)
    subscriber = {"successUri": _url("rebind.test", target.port)}
    policy.check(subscriber)
    delivery = policy.send(subscriber, "successUri", {"x": 1}, job="j")
    assert delivery is not None and delivery.wait(60)
    assert target.calls == []
    if allowed_lookups == 1:
        assert delivery.outcome == "refused" and allowed.calls == []
    else:
        assert delivery.outcome == "delivered"
        [(method, path, host, _, body)] = allowed.calls
        assert (method, host, json.loads(body)) == ("POST", f"rebind.test:{target.port}", {"x": 1})
        assert path == f"/{TOKEN_PATH}?t={TOKEN_QUERY}"
    policy.close(5)


def test_every_answer_of_a_lookup_is_checked(dns: FakeDNS, listeners) -> None:
    allowed = listeners("127.0.0.2")
    dns.answers["mixed.test"] = ["127.0.0.2,127.0.0.1"]
    destinations = Destinations(["127.0.0.2/32"])
    url = f"http://mixed.test:{allowed.port}/x"
    assert "internal address (127.0.0.1)" in (destinations.problem(url) or "")
    with pytest.raises(DestinationRefused):
        destinations.post_json(url, {}, timeout=5)
    assert allowed.calls == []


def test_a_failed_connection_moves_to_the_next_checked_answer(dns: FakeDNS, listeners) -> None:
    allowed = listeners("127.0.0.2")
    dns.answers["two.test"] = ["127.0.0.3,127.0.0.2"]  # nothing listens on 127.0.0.3
    destinations = Destinations(["127.0.0.2/31"])
    assert destinations.post_json(f"http://two.test:{allowed.port}/x", {}, timeout=5) == 204
    assert [call[2] for call in allowed.calls] == [f"two.test:{allowed.port}"]
    assert dns.count("two.test") == 1  # one lookup, both answers checked


def test_ipv6_destinations_are_connected_as_checked(dns: FakeDNS, listeners) -> None:
    listener = listeners("::1")
    dns.answers["six.test"] = ["::1"]
    destinations = Destinations(["::1/128"])
    assert destinations.post_json(f"http://[::1]:{listener.port}/x", {}, timeout=5) == 204
    assert destinations.post_json(f"http://six.test:{listener.port}/x", {}, timeout=5) == 204
    assert [call[2] for call in listener.calls] == [
        f"[::1]:{listener.port}",
        f"six.test:{listener.port}",
    ]
    with pytest.raises(DestinationRefused):
        Destinations().post_json(f"http://six.test:{listener.port}/x", {}, timeout=5)
    assert len(listener.calls) == 2


def test_tls_keeps_the_host_name_for_sni_and_verification(
    dns: FakeDNS, listeners, tmp_path: Path
) -> None:
    server, client = tls_contexts(tmp_path, "pinned.test")
    listener = listeners("127.0.0.2", answer=(200, {}, b"ok"), tls=server)
    dns.answers["pinned.test"] = ["127.0.0.2"]
    dns.answers["other.test"] = ["127.0.0.2"]
    destinations = Destinations(["127.0.0.2/32"], verify=client)
    url = f"https://pinned.test:{listener.port}/x"
    with destinations.stream("GET", url, timeout=10, max_bytes=100) as answer:
        assert (answer.status_code, answer.read()) == (200, b"ok")
        assert str(answer.url) == url  # the name, not the address
    assert listener.sni == ["pinned.test"]
    assert listener.calls[0][2] == f"pinned.test:{listener.port}"
    # Same address, another name: the certificate is checked against the name.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        other = f"https://other.test:{listener.port}/"
        with destinations.stream("GET", other, timeout=10, max_bytes=10):
            pass
    destinations.close()


def test_redirects_are_not_followed_and_each_hop_is_checked(dns: FakeDNS, listeners) -> None:
    inside = listeners("127.0.0.1")
    hop = listeners(
        "127.0.0.2", answer=(302, {"Location": f"http://127.0.0.1:{inside.port}/x"}, b"")
    )
    destinations = Destinations(["127.0.0.2/32"])
    assert destinations.post_json(f"http://127.0.0.2:{hop.port}/cb", {}, timeout=5) == 302
    with pytest.raises(DestinationRefused, match="internal address"):
        with destinations.stream(
            "GET", f"http://127.0.0.2:{hop.port}/r", timeout=5, max_bytes=10, max_redirects=3
        ):
            pass
    assert inside.calls == []
    with destinations.client(follow_redirects=True) as client:
        with pytest.raises(DestinationRefused):
            client.get(f"http://127.0.0.2:{hop.port}/r")
    assert inside.calls == []


def test_bodies_are_bounded_in_size_and_time(listeners) -> None:
    big = listeners(answer=(200, {}, b"x" * 5000))

    def slow(handler):
        handler.send_response(200)
        handler.end_headers()  # no length: read until closed
        for _ in range(20):
            handler.wfile.write(b"y")
            handler.wfile.flush()
            time.sleep(0.2)
        return None, {}, b""

    dripping = listeners(answer=slow)
    destinations = Destinations(["127.0.0.1/32"])
    url = f"http://127.0.0.1:{big.port}/"
    with destinations.stream("GET", url, timeout=5, max_bytes=1000) as answer:
        with pytest.raises(ResponseTooLarge):
            answer.read()
    url = f"http://127.0.0.1:{dripping.port}/"
    with destinations.stream("GET", url, timeout=1, max_bytes=1000) as answer:
        with pytest.raises(httpx.ReadTimeout):
            answer.read()


def test_an_egress_proxy_gets_every_request(listeners) -> None:
    proxy = listeners(answer=(204, {}, b""))
    destinations = Destinations(proxy=f"http://127.0.0.1:{proxy.port}")
    # A name that does not resolve here is the proxy's to resolve.
    url = "http://hooks.example.invalid/cb?t=1"
    assert destinations.problem(url) is None
    assert destinations.post_json(url, {"a": 1}, timeout=5) == 204
    [(method, target, host, _, _)] = proxy.calls
    assert (method, target, host) == ("POST", url, "hooks.example.invalid")
    with pytest.raises(DestinationRefused):  # internal addresses still refused here
        destinations.post_json("http://127.0.0.1:9/", {}, timeout=5)
    assert len(proxy.calls) == 1


@pytest.mark.parametrize(
    ("callbacks", "fragment"),
    [
        ({"proxy": "http://egress:pr0xy-pass@proxy.internal:3128"}, "user:password@"),
        ({"proxy": "socks5://proxy.internal:1080"}, "an http(s) URL of the proxy"),
        ({"workers": 0}, "greater than or equal to 1"),
        ({"queue_size": -1}, "greater than or equal to 0"),
        ({"drain_seconds": 600}, "less than or equal to 60"),
    ],
)
def test_pool_and_proxy_settings_are_checked_naming_the_key(callbacks, fragment) -> None:
    from pygeoapi_prefect.errors import ConfigError

    name = "pygeoapi_prefect.manager.PrefectManager"
    with pytest.raises(ConfigError) as caught:
        load_config({"name": name, "callbacks": callbacks})
    [key] = callbacks
    assert f"server.manager.callbacks.{key}" in str(caught.value)
    assert fragment in str(caught.value)
    assert "pr0xy-pass" not in str(caught.value)


# -- logs ---------------------------------------------------------------------


def test_logs_show_no_callback_path_or_query(
    dns: FakeDNS, listeners, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    ok = listeners()
    failing = listeners(answer=(500, {}, b""))
    moved = listeners(answer=(301, {"Location": "http://127.0.0.1:9/x"}, b""))
    dead = DeadTarget()
    dns.answers["hooks.test"] = ["127.0.0.1"]
    policy = CallbackPolicy(["127.0.0.1/32"], retries=1, timeout=1, workers=2, queue_size=10)
    strict = CallbackPolicy(retries=0, timeout=1)
    deliveries = [
        policy.send({"successUri": _url("127.0.0.1", ok.port)}, "successUri", {}, job="ok"),
        policy.send({"failedUri": _url("127.0.0.1", failing.port)}, "failedUri", {}, job="5xx"),
        policy.send({"successUri": _url("127.0.0.1", moved.port)}, "successUri", {}, job="3xx"),
        policy.send({"successUri": _url("127.0.0.1", dead.port)}, "successUri", {}, job="dead"),
        policy.send({"successUri": _url("127.0.0.1", free_port())}, "successUri", {}, job="off"),
        strict.send({"successUri": _url("hooks.test", ok.port)}, "successUri", {}, job="dns"),
        strict.send({"successUri": _url("10.1.2.3", 80)}, "successUri", {}, job="internal"),
    ]
    for delivery in deliveries:
        assert delivery is not None and delivery.wait(60), delivery
    with pytest.raises(InvalidInputs) as refused:
        strict.check({"successUri": _url("100.100.100.200", 80)})
    dead.close()
    policy.close(5)
    strict.close(5)
    outcomes = [d.outcome for d in deliveries if d]
    assert outcomes == ["delivered", "failed", "refused", "failed", "failed", "refused", "refused"]
    text = caplog.text + str(refused.value)
    assert "callback failedUri of job 5xx to http://127.0.0.1:" in caplog.text
    assert "retrying" in caplog.text and "not sent" in caplog.text
    assert TOKEN_PATH not in text and TOKEN_QUERY not in text


# -- the pool -----------------------------------------------------------------


def callback_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)}


def test_a_dead_target_does_not_grow_threads_beyond_the_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = DeadTarget()
    policy = CallbackPolicy(["127.0.0.1/32"], retries=3, timeout=30, workers=2, queue_size=3)
    seen: list[int] = []
    before = callback_threads()
    deliveries = []
    for number in range(12):
        subscriber = {"successUri": _url("127.0.0.1", dead.port)}
        deliveries.append(policy.send(subscriber, "successUri", {"n": number}, job=f"job-{number}"))
        seen.append(len(callback_threads() - before))
    assert max(seen) == 2
    dropped = [d for d in deliveries if d and d.outcome == "dropped"]
    assert len(dropped) == 12 - 2 - 3 == policy.dropped
    assert "callback successUri of job job-11 to http://127.0.0.1:" in caplog.text
    assert "dropped: the delivery queue is full (7 dropped so far" in caplog.text
    # Stopping: the queued ones are abandoned at once, the two under way end
    # when their connection does (here: the target goes away), without retries.
    policy.close(0.5)
    queued = [d for d in deliveries if d and d.outcome == "abandoned"]
    assert len(queued) == 3
    dead.close()
    for delivery in deliveries:
        assert delivery is not None and delivery.wait(60)
    assert sorted({d.outcome for d in deliveries if d}) == ["abandoned", "dropped"]
    for thread in callback_threads() - before:
        thread.join(60)
        assert not thread.is_alive()


def test_the_engine_stops_its_callbacks_in_bounded_time() -> None:
    from pygeoapi_prefect.execution.engine import Engine

    dead = DeadTarget()
    config = load_config(
        {
            "name": "pygeoapi_prefect.manager.PrefectManager",
            "connection": "http://127.0.0.1:9/api",
            "callbacks": {
                "allow": ["127.0.0.1/32"],
                "timeout": 60,
                "workers": 1,
                "queue_size": 5,
                "drain_seconds": 1,
            },
        }
    )
    engine = Engine(config)
    subscriber = {"successUri": _url("127.0.0.1", dead.port)}
    send = engine.callbacks.send
    deliveries = [send(subscriber, "successUri", {}, job=f"j{n}") for n in range(4)]
    engine.close()  # returns: the drain is bounded by callbacks.drain_seconds
    assert [d.outcome for d in deliveries[1:] if d] == ["abandoned"] * 3
    dead.close()
    assert deliveries[0] is not None and deliveries[0].wait(60)
    assert deliveries[0].outcome == "abandoned"


# -- over HTTP, in a real pygeoapi ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://100.100.100.200/latest/meta-data/",
        "http://100.64.0.1/",
        "http://198.18.0.1/cb",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[fd00:ec2::254]/latest/meta-data/",
    ],
)
def test_shared_address_space_and_metadata_are_400_at_submission(
    pygeoapi: Pygeoapi, url: str
) -> None:
    response = pygeoapi.execute(
        "hello-world", {"name": "x"}, asynchronous=True, subscriber={"successUri": url}
    )
    assert response.status_code == 400, response.text
    document = response.json()
    validate(document, "exception")
    assert "subscriber successUri" in document["description"]
    assert "internal address" in document["description"]
    assert "meta-data" not in document["description"]


@pytest.fixture
def rebinding_pygeoapi(prefect_server, tmp_path: Path):
    """pygeoapi whose DNS answers 127.0.0.2 twice for rebind.test, then 127.0.0.1."""
    site = fake_dns_site(tmp_path / "site", TESTS)
    port = free_port()
    config = pygeoapi_config(
        port, tmp_path / "results", manager={"callbacks": {"allow": ["127.0.0.2/32"], "retries": 0}}
    )
    config["logging"] = {"level": "DEBUG"}
    path = tmp_path / "pygeoapi-config.yml"
    path.write_text(yaml.safe_dump(config))
    env = server_env(prefect_server.api_url, tmp_path / "prefect-home")
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    env["PREFECT_LOGGING_ROOT_LEVEL"] = "DEBUG"  # pygeoapi's DEBUG lines reach the log
    env["PYGEOAPI_TEST_FAKE_DNS"] = json.dumps(
        {"rebind.test": ["127.0.0.2", "127.0.0.2", "127.0.0.1"]}
    )
    log = tmp_path / "pygeoapi.log"
    process = spawn_serve(path, port, tmp_path, env, log)
    server = Pygeoapi(f"http://127.0.0.1:{port}", path, tmp_path / "results", process, log)
    server.started(90)
    yield server
    server.stop()


def test_a_rebinding_callback_never_reaches_loopback_over_http(
    rebinding_pygeoapi: Pygeoapi, listeners
) -> None:
    target = listeners("127.0.0.1")
    allowed = listeners("127.0.0.2", target.port)
    first = {"successUri": _url("rebind.test", target.port)}
    response = rebinding_pygeoapi.execute("hello-world", {"name": "rb"}, subscriber=first)
    assert response.status_code == 200, response.text  # lookup 1: 127.0.0.2, allowed
    deadline = time.monotonic() + 60
    while not allowed.calls and time.monotonic() < deadline:
        time.sleep(0.1)
    [(method, _, host, _, body)] = allowed.calls  # lookup 2: the connection, to 127.0.0.2
    assert (method, host) == ("POST", f"rebind.test:{target.port}")
    assert json.loads(body) == {"echo": "Hello rb!"}
    # From now on the name answers 127.0.0.1: refused at submission, never connected.
    again = rebinding_pygeoapi.execute("hello-world", {"name": "rb"}, subscriber=first)
    assert again.status_code == 400
    assert target.calls == []
    log = rebinding_pygeoapi.log_path.read_text()
    assert f"http://rebind.test:{target.port} points at an internal address" in log
    # pygeoapi logs whole execute bodies at DEBUG: ours reach it without the subscriber.
    assert 'pygeoapi.api.processes - {"inputs": {"name": "rb"}}' in log
    assert TOKEN_PATH not in log and TOKEN_QUERY not in log
