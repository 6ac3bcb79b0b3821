"""pygeoapi's HTML pages and the Prefect UI, in headless Chromium.

One browser and one set of jobs (successful, raw output, failed, running with
progress) serve every test here. Expected texts come from the JSON documents
of the same jobs, formatted as pygeoapi's templates format them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from browser import chromium
from playwright.sync_api import Browser, Locator, Page, expect

from pygeoapi_prefect.jobs.runs import job_tags
from pygeoapi_prefect.prefect.api import PrefectAPI

RESULTS_REL = "http://www.opengis.net/def/rel/ogc/1.0/results"
LOGS_REL = "http://www.opengis.net/def/rel/ogc/1.0/job-log"
#: How pygeoapi's templates show a date-time (pygeoapi.util.DATETIME_FORMAT).
SHOWN = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass
class Jobs:
    done: str
    raw: str
    failed: str
    running: str
    queued: str


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope: Playwright's sync API runs an event loop in this thread
    # until it stops, and Prefect's sync-compatible calls in later tests of
    # the same process (block saves, deployments) would return coroutines.
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    # Generous: Prefect's UI is a 4 MB script, slow to start on a busy machine.
    context.set_default_timeout(60_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def _job_id(response: Any) -> str:
    return str(response.headers["Location"].rsplit("/", 1)[1])


@pytest.fixture(scope="module")
def jobs(pygeoapi: Any, prefect_api: PrefectAPI) -> Iterator[Jobs]:
    done = _job_id(pygeoapi.execute("hello-world", {"name": "browser"}))
    raw = _job_id(pygeoapi.execute("bytes", {}))
    failed = pygeoapi.execute("fail", {"what": "a browser"}, asynchronous=True).json()["jobID"]
    running = pygeoapi.execute("progress", {"seconds": 300}, asynchronous=True).json()["jobID"]
    # Queued, as a run of a deployment waiting for a worker is: never started.
    queued = prefect_api.create_flow_run(
        flow_name="hello-world",
        state={"type": "SCHEDULED", "name": "Scheduled", "message": "Waiting for a worker"},
        tags=job_tags("hello-world"),
    )["id"]
    try:
        pygeoapi.wait_for(failed, "failed", timeout=60)
        deadline = time.monotonic() + 60
        while pygeoapi.job(running).json().get("progress") != 50:
            assert time.monotonic() < deadline, "the progress job never reported 50%"
            time.sleep(0.1)
        yield Jobs(done=done, raw=raw, failed=failed, running=running, queued=queued)
    finally:
        pygeoapi.client.delete(f"/jobs/{running}")
        pygeoapi.client.delete(f"/jobs/{queued}")


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _shown(value: str | None) -> str:
    return _when(value).strftime(SHOWN) if value else ""


def _duration(document: dict[str, Any]) -> str:
    if "started" not in document:
        return ""
    return str(_when(document["finished"]) - _when(document["started"]))


def _links(page: Page) -> dict[str, Locator]:
    # The job page lists its links with the relation as the title attribute.
    anchors = page.locator("#job-status-body ul a")
    return {
        anchors.nth(i).get_attribute("title") or "": anchors.nth(i) for i in range(anchors.count())
    }


def _row(page: Page, job_id: str) -> list[str]:
    row = page.locator("table.job-list tbody tr", has=page.locator(f'a[href$="/jobs/{job_id}"]'))
    return [cell.strip() for cell in row.locator("td").all_inner_texts()]


def test_job_list_shows_each_job_as_its_document_says(page, pygeoapi, jobs):
    documents = {job_id: pygeoapi.job(job_id).json() for job_id in vars(jobs).values()}
    page.goto(f"{pygeoapi.base_url}/jobs?f=html&limit=50")
    for job_id, document in documents.items():
        job_id_cell, process_cell, start, duration, _, status, message = _row(page, job_id)
        assert (job_id_cell, process_cell) == (job_id, document["processID"])
        assert start == _shown(document.get("started"))
        assert status == document["status"]
        assert message == document["message"]
        if document["status"] != "running":
            assert duration == _duration(document)
    assert _row(page, jobs.failed)[6] == "cannot handle a browser"
    assert _row(page, jobs.running)[6] == "halfway there"
    queued = _row(page, jobs.queued)
    assert (queued[2], queued[3], queued[5]) == ("", "", "accepted")  # no start, no duration
    progress = {
        job_id: page.locator(
            "table.job-list tbody tr", has=page.locator(f'a[href$="/jobs/{job_id}"]')
        )
        .locator("progress")
        .get_attribute("value")
        for job_id in (jobs.done, jobs.running, jobs.failed, jobs.queued)
    }
    assert progress == {jobs.done: "1000", jobs.running: "500", jobs.failed: "0", jobs.queued: "0"}
    # Newest first, as in the JSON list (pygeoapi alone sorts by start time,
    # which puts the queued job last).
    hrefs = page.locator("table.job-list tbody tr td:first-child a").all_inner_texts()
    ours = [job_id for job_id in hrefs if job_id in documents]
    assert ours == [jobs.queued, jobs.running, jobs.failed, jobs.raw, jobs.done]


def test_job_list_links_lead_to_the_job_and_its_process(page, pygeoapi, jobs):
    page.goto(f"{pygeoapi.base_url}/jobs?f=html&limit=50")
    row = page.locator(
        "table.job-list tbody tr", has=page.locator(f'a[href$="/jobs/{jobs.failed}"]')
    )
    row.get_by_role("link", name=jobs.failed).click()
    assert page.url == f"{pygeoapi.base_url}/jobs/{jobs.failed}"
    # HTML by content negotiation, rendered from the fixed document (with its links).
    assert page.locator("#job-status-header").inner_text().startswith("Status: failed")
    assert set(_links(page)) == {"self", "related", LOGS_REL}
    page.go_back()
    row.get_by_role("link", name="fail", exact=True).click()
    assert page.url == f"{pygeoapi.base_url}/processes/fail"
    assert page.locator('#process h2[itemprop="name"]').inner_text() == "fail"


def test_running_job_page_shows_its_progress(page, pygeoapi, jobs):
    started = _when(pygeoapi.job(jobs.running).json()["started"])
    page.goto(f"{pygeoapi.base_url}/jobs/{jobs.running}?f=html")
    header = page.locator("#job-status-header").inner_text()
    assert "Status: running" in header
    assert "Progress: 50%" in header
    assert page.locator("#progress").get_attribute("value") == "500"
    assert page.locator("#job-status-body .message p").first.inner_text() == "halfway there"
    assert page.locator("#starttime").inner_text() == started.strftime(SHOWN)
    assert page.locator("#endtime").inner_text() == ""
    # Running for as long as the page says: since its start, until the page was made.
    hours, minutes, seconds = page.locator("#runtime").inner_text().split(":")
    shown = timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))
    assert timedelta(0) < shown <= datetime.now(UTC) - started
    links = _links(page)
    assert RESULTS_REL not in links  # no results yet: no link to a 404
    assert set(links) == {"self", "related", LOGS_REL}


def test_failed_job_page_shows_its_message_times_and_links(page, pygeoapi, jobs):
    document = pygeoapi.job(jobs.failed).json()
    page.goto(f"{pygeoapi.base_url}/jobs/{jobs.failed}?f=html")
    assert "Status: failed" in page.locator("#job-status-header").inner_text()
    assert (
        page.locator("#job-status-body .message p").first.inner_text() == "cannot handle a browser"
    )
    assert page.locator("#starttime").inner_text() == _shown(document["started"])
    assert page.locator("#endtime").inner_text() == _shown(document["finished"])
    assert page.locator("#runtime").inner_text() == _duration(document)
    links = _links(page)
    assert set(links) == {"self", "related", LOGS_REL}
    href = links["self"].get_attribute("href")
    assert href == f"{pygeoapi.base_url}/jobs/{jobs.failed}?f=json"
    assert page.request.get(href).json()["jobID"] == jobs.failed


def test_successful_job_page_links_to_results_that_open(page, pygeoapi, jobs):
    document = pygeoapi.job(jobs.done).json()
    page.goto(f"{pygeoapi.base_url}/jobs/{jobs.done}?f=html")
    assert "Progress: 100%" in page.locator("#job-status-header").inner_text()
    assert page.locator("#endtime").inner_text() == _shown(document["finished"])
    assert page.locator("#runtime").inner_text() == _duration(document)
    _links(page)[RESULTS_REL].click()
    assert page.url == f"{pygeoapi.base_url}/jobs/{jobs.done}/results"
    assert jobs.done in page.locator("#jobs h2").inner_text()
    # The page's script writes the output into #results.
    assert "Hello browser!" in page.locator("#results").inner_text()
    # A raw output other than JSON comes as itself, with its media type.
    page.goto(f"{pygeoapi.base_url}/jobs/{jobs.raw}?f=html")
    link = _links(page)[RESULTS_REL]
    assert "image/png" in link.inner_text()
    answer = page.request.get(link.get_attribute("href") or "")
    assert answer.headers["content-type"] == "image/png"
    assert answer.body().startswith(b"\x89PNG")


def test_process_page_links_to_the_jobs_of_the_process(page, pygeoapi, jobs):
    page.goto(f"{pygeoapi.base_url}/processes/fail?f=html")
    page.get_by_role("link", name="Jobs of this process as HTML").click()
    processes = page.locator("table.job-list tbody tr td:nth-child(2)").all_inner_texts()
    assert processes and set(processes) == {"fail"}
    assert page.locator(f'table.job-list a[href$="/jobs/{jobs.failed}"]').count() == 1


def test_job_page_leads_to_its_flow_run_in_the_prefect_ui(
    page, pygeoapi, jobs, prefect_api, prefect_server
):
    run = prefect_api.read_flow_run(jobs.failed)
    page.goto(f"{pygeoapi.base_url}/jobs/{jobs.failed}?f=html")
    _links(page)["related"].click()
    assert page.url == f"{prefect_server.ui_url}/runs/flow-run/{jobs.failed}"
    # Prefect's UI: the run's name and the process tag head the page ...
    expect(page.get_by_text("pygeoapi.process:fail").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text(run["name"], exact=True).first).to_be_visible()
    # ... and its details give the flow run id, which is the job id.
    page.locator(".p-tab", has_text="Details").click()
    value = page.locator(
        ".p-key-value", has=page.locator(".p-key-value__label", has_text="Flow Run ID")
    ).locator(".p-key-value__value")
    expect(value).to_have_text(jobs.failed)


def test_flow_run_labels_lead_back_to_the_job(page, pygeoapi, jobs, prefect_api):
    for job_id in (jobs.done, jobs.running):
        run = prefect_api.read_flow_run(job_id)
        assert run["labels"]["pygeoapi.jobs_url"] == f"{pygeoapi.base_url}/jobs"
        page.goto(f"{run['labels']['pygeoapi.jobs_url']}/{run['id']}")
        assert page.locator(".crumbs").get_by_role("link", name=job_id).count() == 1
        status = pygeoapi.job(job_id).json()["status"]
        assert f"Status: {status}" in page.locator("#job-status-header").inner_text()


def test_json_documents_carry_the_same_links(pygeoapi, jobs):
    # What the HTML pages show comes from these documents.
    rels = {
        job_id: {link["rel"] for link in pygeoapi.job(job_id).json()["links"]}
        for job_id in (jobs.running, jobs.failed, jobs.done)
    }
    assert rels[jobs.running] == rels[jobs.failed] == {"self", "related", LOGS_REL}
    assert rels[jobs.done] == {"self", "related", RESULTS_REL, LOGS_REL}
    description = pygeoapi.client.get("/processes/progress", params={"f": "json"}).json()
    own = [
        link["href"]
        for link in description["links"]
        if link["rel"].endswith("/job-list")
        and link["type"] == "application/json"
        and "processID=" in link["href"]
    ]
    assert own == [f"{pygeoapi.base_url}/jobs?processID=progress&f=json"]
    listed = pygeoapi.client.get(own[0]).json()["jobs"]
    assert {job["processID"] for job in listed} == {"progress"}
    assert jobs.running in {job["jobID"] for job in listed}
