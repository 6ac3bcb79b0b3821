"""Jobs that belong to someone: bearer tokens, ownership over the whole job API.

A real pygeoapi (``pygeoapi-prefect serve``) with ``server.manager.auth.mode:
jwt`` checks tokens signed with test RSA keys against a JSON Web Key Set
served over HTTP on loopback; two users and an admin use the job API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from conftest import Pygeoapi, start_pygeoapi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from ogc import validate
from servers import start_server

from pygeoapi_prefect.config import load_config
from pygeoapi_prefect.errors import NotAuthenticated
from pygeoapi_prefect.jobs.owners import space_of
from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.prefect.server import PrefectServer, free_port

ISSUER = "https://idp.test/realms/pygeoapi"
AUDIENCE = "pygeoapi"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class KeyServer:
    """A JSON Web Key Set served over HTTP on loopback; keys can be added while it runs."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.fetches += 1
                body = json.dumps({"keys": [owner.jwk(kid) for kid in owner.published]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def new_key(self, kid: str, *, publish: bool = True) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)

    def jwk(self, kid: str) -> dict[str, Any]:
        found = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
        return {**found, "kid": kid, "use": "sig", "alg": "RS256"}

    def public_pem(self, kid: str) -> bytes:
        return (
            self.keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(
        self, user: str, *, kid: str = "k1", groups: list[str] | None = None, **claims: Any
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user,
            "iat": now,
            "exp": now + 600,
            "groups": groups or [],
            **claims,
        }
        payload = {key: value for key, value in payload.items() if value is not None}
        return jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _unsigned(payload: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


def _hmac_with_public_key(payload: dict[str, Any], secret: bytes) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


@pytest.fixture(scope="module")
def keys() -> Iterator[KeyServer]:
    server = KeyServer()
    server.new_key("k1")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def secured(
    prefect_server: PrefectServer, keys: KeyServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pygeoapi]:
    manager = {
        "heartbeat": {"install_automation": False},
        "auth": {
            "mode": "jwt",
            "jwt": {
                "jwks_url": keys.url,
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "jwks_min_refresh_seconds": 0,
            },
            "admins": ["root"],
            "admin_groups": ["operators"],
        },
    }
    server = start_pygeoapi(
        tmp_path_factory.mktemp("auth"), prefect_server.api_url, manager=manager, workers=2
    )
    try:
        yield server
    finally:
        server.stop()


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(response: httpx.Response, reason: str | None = None) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    document = response.json()
    validate(document, "exception")
    assert document["status"] == 401
    if reason is not None:
        assert reason in document["detail"], document


def test_public_routes_stay_public_and_job_routes_need_a_token(secured: Pygeoapi) -> None:
    for path in ("/processes", "/processes/hello-world", "/conformance"):
        assert secured.client.get(path, params={"f": "json"}).status_code == 200, path
    _refused(secured.client.get("/jobs", params={"f": "json"}))
    _refused(secured.client.get(f"/jobs/{uuid.uuid4()}"))
    _refused(secured.client.delete(f"/jobs/{uuid.uuid4()}"))
    _refused(secured.client.get(f"/jobs/{uuid.uuid4()}/results"))
    _refused(secured.execute("hello-world", {"name": "nobody"}))
    _refused(secured.client.get("/jobs", headers={"Authorization": "Basic dXNlcjpwdw=="}))


def test_bad_tokens_are_refused(secured: Pygeoapi, keys: KeyServer) -> None:
    now = int(time.time())
    keys.new_key("unpublished", publish=False)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600}
    cases = {
        "expired": (keys.token("mallory", exp=now - 120), "expired"),
        "not yet valid": (keys.token("mallory", nbf=now + 600), "not valid yet"),
        "wrong audience": (keys.token("mallory", aud="another-app"), "another audience"),
        "wrong issuer": (keys.token("mallory", iss="https://evil.test"), "another issuer"),
        "alg none": (_unsigned(claims), "not accepted"),
        "HMAC with the public key": (
            _hmac_with_public_key(claims, keys.public_pem("k1")),
            "not accepted",
        ),
        "unknown key id": (keys.token("mallory", kid="unpublished"), "does not know"),
        "tampered": (keys.token("mallory")[:-6] + "AAAAAA", "signature"),
        "garbage": ("not-a-token", "not a JSON Web Token"),
        "no user claim": (keys.token("", sub=None), "naming the user"),
    }
    for name, (token, reason) in cases.items():
        response = secured.client.get("/jobs", params={"f": "json"}, headers=_as(token))
        try:
            _refused(response, reason)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
        assert token not in response.text


def test_a_new_signing_key_is_fetched_when_a_token_names_it(
    secured: Pygeoapi, keys: KeyServer
) -> None:
    keys.new_key("rotated")
    token = keys.token("carol", kid="rotated")
    response = secured.client.get("/jobs", params={"f": "json"}, headers=_as(token))
    assert response.status_code == 200, response.text


def _job_ids(server: Pygeoapi, token: str, **params: str) -> tuple[set[str], int]:
    response = server.client.get(
        "/jobs", params={"f": "json", "limit": "100", **params}, headers=_as(token)
    )
    assert response.status_code == 200, response.text
    document = response.json()
    validate(document, "jobList")
    return {job["jobID"] for job in document["jobs"]}, document["numberMatched"]


def test_users_see_only_their_own_jobs_and_admins_see_all(
    secured: Pygeoapi, keys: KeyServer, prefect_api: PrefectAPI
) -> None:
    alice = keys.token(f"alice-{uuid.uuid4().hex[:6]}")
    bob = keys.token(f"bob-{uuid.uuid4().hex[:6]}")
    alice_id = jwt.decode(alice, options={"verify_signature": False})["sub"]
    root = keys.token("root")
    operator = keys.token("olga", groups=["operators"])
    client = secured.client

    sync = client.post(
        "/processes/hello-world/execution", json={"inputs": {"name": "a"}}, headers=_as(alice)
    )
    assert sync.status_code == 200, sync.text
    sync_id = sync.headers["Location"].rsplit("/", 1)[1]
    queued = client.post(
        "/processes/hello-world/execution",
        json={"inputs": {"name": "b"}},
        headers={**_as(alice), "Prefer": "respond-async"},
    )
    assert queued.status_code == 201, queued.text
    async_id = queued.headers["Location"].rsplit("/", 1)[1]
    bobs = client.post(
        "/processes/hello-world/execution",
        json={"inputs": {"name": "c"}},
        headers={**_as(bob), "Prefer": "respond-async"},
    )
    bob_job = bobs.headers["Location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = [
            client.get(f"/jobs/{job}", headers=_as(token)).json()["status"]
            for job, token in ((async_id, alice), (bob_job, bob))
        ]
        if states == ["successful", "successful"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"jobs never finished: {states}")

    # The owner is a tag on the flow run, from its creation on, and the
    # results live under the owner's own prefix of the result store.
    for job in (sync_id, async_id):
        assert f"pygeoapi.owner:{alice_id}" in prefect_api.read_flow_run(job)["tags"]
        space = space_of(f"pygeoapi.owner:{alice_id}")
        assert (secured.results_dir / space / job).is_dir(), list(secured.results_dir.iterdir())
        assert not (secured.results_dir / job).exists()

    mine, matched = _job_ids(secured, alice)
    assert mine == {sync_id, async_id} and matched == 2
    theirs, matched = _job_ids(secured, bob)
    assert theirs == {bob_job} and matched == 1
    page, matched = _job_ids(secured, alice, limit="1")
    assert len(page) == 1 and matched == 2

    # Another user's job is not found (404, not 403), whatever the route.
    for path in (f"/jobs/{sync_id}", f"/jobs/{sync_id}/results", f"/jobs/{sync_id}/logs"):
        response = client.get(path, params={"f": "json"}, headers=_as(bob))
        assert response.status_code == 404, (path, response.text)
        validate(response.json(), "exception")
    refused = client.delete(f"/jobs/{async_id}", headers=_as(bob))
    assert refused.status_code == 404, refused.text
    assert client.get(f"/jobs/{async_id}/results", headers=_as(alice)).status_code == 200
    assert client.get(f"/jobs/{async_id}/logs", headers=_as(alice)).status_code == 200
    assert client.get(f"/jobs/{async_id}", headers=_as(alice)).json()["status"] == "successful"

    # HTML pages show nothing of another user's jobs.
    page = client.get("/jobs", params={"f": "html"}, headers=_as(bob))
    assert page.status_code == 200 and bob_job in page.text
    assert sync_id not in page.text and async_id not in page.text

    # A user's owner filter cannot reach another user's jobs.
    assert _job_ids(secured, bob, owner=alice_id) == (set(), 0)

    # Admins (by user id or group) see every job and may filter by owner.
    for admin in (root, operator):
        every, _ = _job_ids(secured, admin)
        assert {sync_id, async_id, bob_job} <= every
        assert _job_ids(secured, admin, owner=alice_id) == ({sync_id, async_id}, 2)
        status = client.get(f"/jobs/{bob_job}", headers=_as(admin))
        assert status.status_code == 200
    dismissed = client.delete(f"/jobs/{bob_job}", headers=_as(root))
    assert dismissed.status_code == 200, dismissed.text
    assert _job_ids(secured, bob) == (set(), 0)
    bob_id = jwt.decode(bob, options={"verify_signature": False})["sub"]
    assert not (secured.results_dir / space_of(f"pygeoapi.owner:{bob_id}") / bob_job).exists()


def test_anonymous_callers_share_one_space_apart_from_users(
    prefect_server: PrefectServer, keys: KeyServer, tmp_path: Path
) -> None:
    manager = {
        "heartbeat": {"install_automation": False},
        "auth": {
            "mode": "jwt",
            "anonymous": "shared",
            "jwt": {"jwks_url": keys.url, "issuer": ISSUER, "audience": AUDIENCE},
        },
    }
    server = start_pygeoapi(tmp_path, prefect_server.api_url, manager=manager)
    try:
        anonymous = server.execute("hello-world", {"name": "anyone"})
        assert anonymous.status_code == 200, anonymous.text
        anonymous_id = anonymous.headers["Location"].rsplit("/", 1)[1]
        dave = keys.token(f"dave-{uuid.uuid4().hex[:6]}")
        daves = server.client.post(
            "/processes/hello-world/execution", json={"inputs": {"name": "d"}}, headers=_as(dave)
        )
        dave_id = daves.headers["Location"].rsplit("/", 1)[1]
        listed = server.client.get("/jobs", params={"f": "json"}).json()
        assert anonymous_id in {job["jobID"] for job in listed["jobs"]}
        assert dave_id not in {job["jobID"] for job in listed["jobs"]}
        assert server.job(dave_id).status_code == 404
        assert _job_ids(server, dave)[0] == {dave_id}
        assert server.client.get(f"/jobs/{anonymous_id}", headers=_as(dave)).status_code == 404
    finally:
        server.stop()


def test_the_manager_refuses_requests_that_were_not_authenticated() -> None:
    # pygeoapi's own apps call the manager without our web layer: with auth
    # on, it must fail closed, not serve every job to everyone.
    from pygeoapi_prefect.manager import PrefectManager

    manager = PrefectManager(
        {
            "name": "pygeoapi_prefect.manager.PrefectManager",
            "connection": "http://127.0.0.1:9/api",
            "auth": {"mode": "header"},
        }
    )
    for call in (
        lambda: manager.get_jobs(),
        lambda: manager.get_job(str(uuid.uuid4())),
        lambda: manager.delete_job(str(uuid.uuid4())),
    ):
        with pytest.raises(NotAuthenticated, match="pygeoapi_prefect.flask_app"):
            call()


def test_auth_config_refuses_weak_settings() -> None:
    base = {"name": "x", "auth": {"mode": "jwt"}}
    for jwt_block, message in (
        (
            {"jwks_file": "/k.json", "issuer": "i", "audience": "a", "algorithms": ["HS256"]},
            "HS256",
        ),
        ({"jwks_file": "/k.json", "issuer": "i", "audience": "a", "algorithms": ["none"]}, "none"),
        ({"issuer": "i", "audience": "a"}, "jwks_url"),
        ({"jwks_url": "ftp://x", "issuer": "i", "audience": "a"}, "jwks_url"),
    ):
        with pytest.raises(ValueError, match=message) as caught:
            load_config({**base, "auth": {"mode": "jwt", "jwt": jwt_block}})
        assert "server.manager.auth.jwt" in str(caught.value)
    with pytest.raises(ValueError, match="server.manager.auth.mode"):
        load_config({**base, "auth": {"mode": "oauth"}})
    with pytest.raises(ValueError, match="server.manager.auth.header.trusted_proxies"):
        load_config({**base, "auth": {"mode": "header", "header": {"trusted_proxies": ["x"]}}})


NGINX_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $remote_user $groups {{ root operators; default ""; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_basic "pygeoapi";
            auth_basic_user_file {tmp}/htpasswd;
            proxy_pass http://127.0.0.1:{upstream};
            # pygeoapi trusts only 127.0.0.2: a direct client (127.0.0.1) is not the proxy.
            proxy_bind 127.0.0.2;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-User $remote_user;
            proxy_set_header X-Forwarded-Groups $groups;
        }}
    }}
}}
"""


@pytest.fixture
def behind_nginx(prefect_server: PrefectServer, tmp_path: Path) -> Iterator[tuple[Pygeoapi, str]]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    manager = {
        "heartbeat": {"install_automation": False},
        "auth": {"mode": "header", "header": {"trusted_proxies": ["127.0.0.2/32"]}},
    }
    server = start_pygeoapi(tmp_path / "pygeoapi", prefect_server.api_url, manager=manager)
    port = free_port()
    upstream = server.base_url.rsplit(":", 1)[1]
    (tmp_path / "htpasswd").write_text(
        "erin:{PLAIN}erin-pw\nfrank:{PLAIN}frank-pw\nroot:{PLAIN}root-pw\n"
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp_path, port=port, upstream=upstream))
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    error_log = tmp_path / "error.log"
                    log = error_log.read_text() if error_log.exists() else "no nginx"
                    raise RuntimeError(log) from None
                time.sleep(0.1)
        yield server, url
    finally:
        process.terminate()
        process.wait(10)
        server.stop()


def test_identities_from_a_trusted_proxy_and_forged_headers_refused(
    behind_nginx: tuple[Pygeoapi, str], prefect_api: PrefectAPI
) -> None:
    server, proxy = behind_nginx
    erin = httpx.Client(base_url=proxy, auth=("erin", "erin-pw"), timeout=30)
    frank = httpx.Client(base_url=proxy, auth=("frank", "frank-pw"), timeout=30)
    root = httpx.Client(base_url=proxy, auth=("root", "root-pw"), timeout=30)
    # The proxy's own authentication: no password, no entry.
    assert httpx.get(f"{proxy}/jobs", timeout=30).status_code == 401

    made = erin.post("/processes/hello-world/execution", json={"inputs": {"name": "e"}})
    assert made.status_code == 200, made.text
    job_id = made.headers["Location"].rsplit("/", 1)[1]
    assert "pygeoapi.owner:erin" in prefect_api.read_flow_run(job_id)["tags"]
    # A forged groups header is replaced by the proxy's.
    assert (
        erin.get(f"/jobs/{job_id}", headers={"X-Forwarded-Groups": "operators"}).status_code == 200
    )
    assert (
        frank.get(f"/jobs/{job_id}", headers={"X-Forwarded-Groups": "operators"}).status_code == 404
    )
    listed = frank.get("/jobs", params={"f": "json"}).json()
    assert job_id not in {job["jobID"] for job in listed["jobs"]}
    assert root.get(f"/jobs/{job_id}").status_code == 404  # root is not an admin here

    # Straight to pygeoapi, not through the proxy: the header is refused.
    forged = server.client.get(
        f"/jobs/{job_id}", headers={"X-Forwarded-User": "erin"}, params={"f": "json"}
    )
    assert forged.status_code == 401, forged.text
    validate(forged.json(), "exception")
    assert "trusted proxy" in forged.json()["detail"]
    # Without the header, a direct caller is anonymous, and anonymous is denied.
    assert server.client.get("/jobs", params={"f": "json"}).status_code == 401
    for client in (erin, frank, root):
        client.close()


@pytest.mark.parametrize("kind", ["uvicorn", "django"])
def test_identities_hold_on_every_app(
    kind: str, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    # The same guarantees under uvicorn (Starlette app) and Django (middleware):
    # the client address each app reports decides whether the header is believed.
    manager = {"auth": {"mode": "header", "header": {"trusted_proxies": ["127.0.0.1/32"]}}}
    server = start_server(kind, tmp_path, prefect_server.api_url, manager=manager, workers=2)
    try:
        ivy = {"X-Forwarded-User": f"ivy-{uuid.uuid4().hex[:8]}"}  # one Prefect for all tests
        made = server.client.post(
            "/processes/hello-world/execution", json={"inputs": {"name": "i"}}, headers=ivy
        )
        assert made.status_code == 200, made.text
        job_id = made.headers["Location"].rsplit("/", 1)[1]
        assert server.client.get(f"/jobs/{job_id}", headers=ivy).status_code == 200
        listed = server.client.get("/jobs", params={"f": "json"}, headers=ivy).json()
        assert [job["jobID"] for job in listed["jobs"]] == [job_id]
        other = server.client.get(f"/jobs/{job_id}", headers={"X-Forwarded-User": "jack"})
        assert other.status_code == 404
        assert server.client.get("/jobs", params={"f": "json"}).status_code == 401
    finally:
        server.stop()
