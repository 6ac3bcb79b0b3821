"""Headless Chromium for the browser tests: Debian's ``chromium``, driven by Playwright.

Playwright's own browser download is not used: the tests drive the system's
Chromium (``apt-get install chromium``; ``.ci/run`` installs it when it is
missing), or the one ``PYGEOAPI_PREFECT_CHROMIUM`` names. Each launch gets a
fresh temporary profile from Playwright.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

#: Without the background-networking flags Chromium keeps trying to reach
#: Google's services, which a closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The Chromium executable to drive."""
    path = os.environ.get("PYGEOAPI_PREFECT_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise RuntimeError(
            "the browser tests need Chromium: apt-get install chromium "
            "(or set PYGEOAPI_PREFECT_CHROMIUM to a Chromium executable)"
        )
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
