"""The process-wide engine: one per OS process and manager config.

(Being built: see docs/architecture.md.) :func:`autostart` is what the apps
call when they are imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["autostart"]


def autostart(manager: Any) -> None:
    """Start the engine of pygeoapi's manager in this process (a no-op for other managers)."""
    start = getattr(manager, "start", None)
    if callable(start):
        start()
