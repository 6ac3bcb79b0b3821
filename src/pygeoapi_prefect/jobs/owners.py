"""Whose a job is: the caller of a request, and the owner tags of flow runs.

With ``server.manager.auth`` on, every job's flow run carries one owner tag
from the moment it is created: ``pygeoapi.owner:<user id>`` for a user,
``pygeoapi.anonymous`` for the shared space of anonymous callers
(``auth.anonymous: shared``). The Prefect UI filters runs by tag, and the
job list asks the Prefect server for the caller's tag, so paging and
``numberMatched`` count only the caller's jobs. A run without an owner tag
(started in Prefect's UI, CLI or by a schedule) belongs to nobody: only
admins see it.

Example::

    caller = Caller("alice", groups=("staff",))
    caller.owner_tag          # 'pygeoapi.owner:alice'
    caller.may_see(run_tags)  # False for bob's runs
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ANONYMOUS_TAG",
    "OWNER_TAG_PREFIX",
    "Caller",
    "owner_of",
    "owner_tag",
    "space_of",
]

OWNER_TAG_PREFIX = "pygeoapi.owner:"
#: The owner tag of jobs of anonymous callers, when they share one space.
ANONYMOUS_TAG = "pygeoapi.anonymous"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def owner_tag(user: str | None) -> str:
    """The tag of a user's jobs (``None``: the anonymous shared space)."""
    return ANONYMOUS_TAG if user is None else OWNER_TAG_PREFIX + user


def owner_of(tags: Iterable[str]) -> str | None:
    """The owner tag among a run's tags (``None``: the run belongs to nobody)."""
    for tag in tags:
        if tag == ANONYMOUS_TAG or tag.startswith(OWNER_TAG_PREFIX):
            return tag
    return None


def space_of(tag: str) -> str:
    """A path segment for an owner tag (the result store keeps each owner's results under it).

    Readable where the user id is (``alice-3bc51062``), safe for every store
    (no ``/``, ``..`` or other characters object stores or file systems
    treat specially), and distinct for distinct owners (the hash suffix).
    """
    name = "anonymous" if tag == ANONYMOUS_TAG else tag[len(OWNER_TAG_PREFIX) :]
    slug = _UNSAFE.sub("_", name)[:40].strip("_") or "user"
    return f"{slug}-{hashlib.sha256(tag.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as the operator's authentication says.

    Attributes:
        user: the user id; ``None`` for an anonymous caller (shared space).
        groups: the user's groups.
        admin: sees and manages every job (``auth.admins``, ``auth.admin_groups``).

    """

    user: str | None
    groups: tuple[str, ...] = ()
    admin: bool = False

    @property
    def owner_tag(self) -> str:
        """The tag this caller's new jobs get."""
        return owner_tag(self.user)

    def may_see(self, tags: Iterable[str]) -> bool:
        """Whether a run with these tags is one of this caller's jobs (or the caller is admin)."""
        return self.admin or owner_of(tags) == self.owner_tag
