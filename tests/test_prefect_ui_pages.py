"""A job's flow run in the Prefect UI, in headless Chromium: its name, summary and logs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from browser import chromium
from playwright.sync_api import Browser, Page, expect
from test_job_logs import _artifacts, _run_async, _wait_name


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope, as in test_html_pages.py (Playwright's loop in this thread).
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)  # Prefect's UI is slow to start on a busy machine
    try:
        yield context.new_page()
    finally:
        context.close()


def test_run_page_shows_the_jobs_name_summary_and_log(page, pygeoapi, prefect_api, prefect_server):
    marker = f"m{uuid.uuid4().hex[:10]}"
    job_id = _run_async(pygeoapi, {"marker": marker, "lines": 2})
    name = _wait_name(prefect_api, job_id)
    assert name == f"chatty-{job_id[:8]}"
    assert _artifacts(prefect_api, job_id)
    page.goto(f"{prefect_server.ui_url}/runs/flow-run/{job_id}")
    # The name heads the page; the log lines are on the Logs tab (the first).
    expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text(f"{marker} line 1").first).to_be_visible()
    expect(page.get_by_text(f"{marker} printed to stderr").first).to_be_visible()
    # The summary artifact: the job's status, its inputs, links back to pygeoapi.
    page.locator(".p-tab", has_text="Artifacts").click()
    page.get_by_text("The pygeoapi job of this flow run").first.click()
    expect(page.get_by_text(f"pygeoapi job chatty-{job_id[:8]}").first).to_be_visible()
    logs_link = page.get_by_role("link", name="logs").first
    expect(logs_link).to_have_attribute("href", f"{pygeoapi.base_url}/jobs/{job_id}/logs?f=txt")
    expect(page.get_by_text(f'"marker": "{marker}"').first).to_be_visible()
    page.screenshot(path=str(pygeoapi.results_dir.parent / f"run-page-{job_id[:8]}.png"))
