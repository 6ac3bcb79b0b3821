"""gunicorn in this process: pygeoapi's app in gthread workers, loaded after the fork."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import pygeoapi_prefect.metrics as metrics

__all__ = ["WORKER_TIMEOUT", "bind_address", "run_gunicorn"]

#: Seconds a gunicorn worker may go without telling the master it lives. A
#: gthread worker tells it from its main loop, so long requests do not count,
#: but importing pygeoapi and Prefect when it boots does.
WORKER_TIMEOUT = 120


def _die_with_the_master(server: Any, worker: Any) -> None:
    # gunicorn's post_fork hook. A master killed outright (SIGKILL, the OOM
    # killer) takes its workers with it at once, as if pygeoapi were one
    # process: nothing runs its shutdown, and the port is free again.
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != server.pid:  # the master died before the prctl
        os._exit(1)


def close_after_refused_bodies(app: Any) -> Any:
    """Wrap a WSGI app so that gunicorn closes the connection after a 413.

    The app refuses a too large body without reading it (413). gunicorn
    then drains a bounded part of the body and, when it cannot, drops the
    connection, after a response that said nothing of it: the client's next
    request on that kept-alive connection fails. The app cannot say
    ``Connection: close`` itself (gunicorn drops hop-by-hop headers of
    apps), so this tells gunicorn's response, the object behind
    ``start_response``, to close.
    """

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        def starting(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            response: Any = getattr(start_response, "__self__", None)
            if status.startswith("413") and hasattr(response, "must_close"):
                response.must_close = True
            return start_response(status, headers, *exc_info)

        return app(environ, starting)

    return wrapped


def bind_address(host: str, port: int) -> str:
    """The ``bind`` of gunicorn for ``host`` and ``port`` (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_gunicorn(
    host: str,
    port: int,
    *,
    workers: int,
    threads: int,
    graceful_timeout: int,
    when_ready: Callable[[], None],
) -> None:
    """Serve ``pygeoapi_prefect.flask_app:APP`` with gunicorn, in this process.

    Returns or raises ``SystemExit`` when gunicorn stops: SIGTERM stops it
    gracefully (workers finish their requests, up to ``graceful_timeout``
    seconds), SIGINT (Ctrl-C) and SIGQUIT at once; each worker then exits its
    interpreter, which runs the manager's clean-up.
    """
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    options: dict[str, Any] = {
        "bind": [bind_address(host, port)],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": WORKER_TIMEOUT,
        "graceful_timeout": graceful_timeout,
        "post_fork": _die_with_the_master,
        # A dead worker's live gauges (jobs running, pool) leave the sums.
        "child_exit": metrics.child_exit,
        "when_ready": lambda server: when_ready(),
        "proc_name": "pygeoapi-prefect",
    }

    class Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn >= 25.1 opens a control socket, by default one path
                # per user ($XDG_RUNTIME_DIR or ~/.gunicorn): several servers
                # on one machine would take it from each other.
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            # In each worker, after the fork (the app is not preloaded).
            from pygeoapi_prefect.web.flask import APP

            return close_after_refused_bodies(APP)

    Gunicorn().run()
