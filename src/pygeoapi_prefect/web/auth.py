"""Who sent a request: identities from a trusted proxy's headers or from bearer tokens.

OGC API - Processes leaves authentication to the deployment; this module
reads what the deployment's authentication established, as
``server.manager.auth`` says (docs/security.md):

- ``header``: a reverse proxy (nginx, oauth2-proxy, a Keycloak gatekeeper)
  authenticates and names the user in a header. The header is believed only
  on connections from ``auth.header.trusted_proxies``; anywhere else a request
  carrying it is refused, so nobody can claim an identity by sending it.
- ``jwt``: ``Authorization: Bearer <token>``, verified here with PyJWT:
  signature by a key of the identity provider's key set (cached; fetched
  again, at most every ``jwks_min_refresh_seconds``, when a token names a key
  id it does not know), ``iss``, ``aud``, ``exp`` and ``nbf``, and only the
  configured asymmetric algorithms (``none`` and HMAC are refused by the
  configuration itself).

Example::

    auth = Authenticator(config.auth)
    caller = auth.caller(headers, client_address)   # None when auth.mode is none
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from pygeoapi_prefect.config import AuthConfig, JwtAuthConfig
from pygeoapi_prefect.errors import IdentityProviderUnavailable, NotAuthenticated
from pygeoapi_prefect.jobs.owners import Caller
from pygeoapi_prefect.urls import without_credentials

logger = logging.getLogger(__name__)

__all__ = ["Authenticator", "KeySet"]

_BEARER_CHALLENGE = 'Bearer realm="pygeoapi"'


def _invalid(description: str) -> NotAuthenticated:
    # RFC 6750 section 3: the error travels in the challenge too.
    quoted = description.replace('"', "'")
    return NotAuthenticated(
        f"Invalid bearer token: {description}",
        challenge=f'{_BEARER_CHALLENGE}, error="invalid_token", error_description="{quoted}"',
    )


class KeySet:
    """The identity provider's signing keys, by key id, fetched when needed.

    Thread-safe; one fetch at a time. A fetch failure keeps the keys already
    known (a token signed by one of them still passes).
    """

    def __init__(self, config: JwtAuthConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._keys: dict[str | None, dict[str, Any]] = {}
        self._fetched = 0.0  # monotonic time of the last fetch attempt
        self._loaded = False

    def _fetch(self) -> dict[str, Any]:
        if self.config.jwks_file is not None:
            return dict(json.loads(Path(self.config.jwks_file).read_text()))
        assert self.config.jwks_url is not None
        response = httpx.get(
            self.config.jwks_url, timeout=self.config.jwks_timeout, follow_redirects=False
        )
        response.raise_for_status()
        return dict(response.json())

    def _refresh(self) -> None:
        self._fetched = time.monotonic()
        try:
            document = self._fetch()
            keys = {key.get("kid"): key for key in document["keys"] if isinstance(key, dict)}
        except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError) as exc:
            source = self.config.jwks_file or without_credentials(self.config.jwks_url or "")
            logger.warning("cannot read the JSON Web Key Set at %s: %s", source, exc)
            if not self._loaded:
                raise IdentityProviderUnavailable(
                    "The identity provider's keys cannot be read now "
                    "(server.manager.auth.jwt.jwks_url); try again later"
                ) from exc
            return
        self._keys = keys
        self._loaded = True
        logger.info("read %d signing keys of the identity provider", len(keys))

    def key(self, kid: str | None) -> dict[str, Any]:
        """The JSON Web Key with this id (a token without ``kid``: the only key).

        Raises:
            NotAuthenticated: no such key, even after a fetch.
            IdentityProviderUnavailable: no key set could be read at all.

        """
        with self._lock:
            age = time.monotonic() - self._fetched
            stale = not self._loaded or age >= self.config.jwks_cache_seconds
            unknown = self._find(kid) is None and age >= self.config.jwks_min_refresh_seconds
            if stale or unknown:
                self._refresh()
            found = self._find(kid)
        if found is None:
            raise _invalid("signed by a key this server does not know")
        return found

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)


class Authenticator:
    """Finds the caller of each request, as ``server.manager.auth`` says."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._proxies = [
            ipaddress.ip_network(entry, strict=False) for entry in config.header.trusted_proxies
        ]
        self._keys = KeySet(config.jwt) if config.jwt is not None else None

    @property
    def challenge(self) -> str | None:
        """The ``WWW-Authenticate`` header of a 401 for a missing identity."""
        return _BEARER_CHALLENGE if self.config.mode == "jwt" else None

    def caller(self, headers: dict[str, str], client: str) -> Caller | None:
        """The caller of a request; ``Caller(None)`` when anonymous, ``None`` with ``mode: none``.

        ``headers`` are keyed in lower case; ``client`` is the address of the
        connection's other end (the proxy, behind one).

        Raises:
            NotAuthenticated: a credential that is invalid, or a forged proxy header.
            IdentityProviderUnavailable: the key set cannot be read.

        """
        if self.config.mode == "none":
            return None
        if self.config.mode == "header":
            user, groups = self._from_headers(headers, client)
        else:
            user, groups = self._from_token(headers)
        if user is None:
            return Caller(None)
        admin = user in self.config.admins or any(g in self.config.admin_groups for g in groups)
        return Caller(user, groups=groups, admin=admin)

    # -- header mode ------------------------------------------------------------

    def _trusted(self, address: str) -> bool:
        try:
            client = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
            client = client.ipv4_mapped
        return any(client in network for network in self._proxies)

    def _from_headers(
        self, headers: dict[str, str], client: str
    ) -> tuple[str | None, tuple[str, ...]]:
        settings = self.config.header
        user = headers.get(settings.user_header.lower())
        groups = headers.get(settings.groups_header.lower())
        if user is None and groups is None:
            return None, ()
        if not self._trusted(client):
            logger.warning(
                "refused a request from %s carrying %s: not a trusted proxy "
                "(server.manager.auth.header.trusted_proxies)",
                client or "an unknown address",
                settings.user_header,
            )
            raise NotAuthenticated(
                f"{settings.user_header} is honoured only from a trusted proxy "
                "(server.manager.auth.header.trusted_proxies)"
            )
        if not user or not user.strip():
            return None, ()
        names = tuple(part.strip() for part in (groups or "").split(",") if part.strip())
        return user.strip(), names

    # -- jwt mode ---------------------------------------------------------------

    def _from_token(self, headers: dict[str, str]) -> tuple[str | None, tuple[str, ...]]:
        header = headers.get("authorization")
        if header is None:
            return None, ()
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated(
                "The Authorization header must be 'Bearer <token>'", challenge=_BEARER_CHALLENGE
            )
        claims = self._verify(token.strip())
        assert self.config.jwt is not None
        user = claims.get(self.config.jwt.user_claim)
        if not isinstance(user, str) or not user:
            raise _invalid(f"no {self.config.jwt.user_claim!r} claim naming the user")
        raw = claims.get(self.config.jwt.groups_claim) or ()
        groups = (raw,) if isinstance(raw, str) else tuple(str(g) for g in raw if g)
        return user, groups

    def _verify(self, token: str) -> dict[str, Any]:
        settings = self.config.jwt
        assert settings is not None and self._keys is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _invalid("not a JSON Web Token") from None
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise _invalid(f"algorithm {str(algorithm)[:20]!r} is not accepted")
        kid = header.get("kid")
        data = self._keys.key(kid if isinstance(kid, str) else None)
        try:
            key = jwt.PyJWK(data, algorithm=data.get("alg") or algorithm)
        except jwt.PyJWKError:
            raise _invalid("its key cannot verify this algorithm") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=settings.algorithms,
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise _invalid("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise _invalid("the token is from another issuer") from None
        except jwt.exceptions.InvalidSubjectError:
            raise _invalid("the sub claim is not a string") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise _invalid("the signature does not verify") from None
        except jwt.PyJWTError:
            raise _invalid("it cannot be decoded") from None
        return claims
