"""Load: a burst of concurrent async submissions, on SQLite and on PostgreSQL.

See docs/reliability.md, part 4.
"""

from __future__ import annotations

import collections
import logging
import time

import pytest
from load import submit_burst, wait_all_finished

logger = logging.getLogger(__name__)


@pytest.mark.timeout(480)
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_500_concurrent_async_submissions(database, pygeoapi_factory, request):
    if database == "postgresql":
        prefect = request.getfixturevalue("prefect_on_postgres")
        # PostgreSQL takes concurrent writes: the scale-out guide's setting.
        server = pygeoapi_factory(
            prefect_api_url=prefect.api_url, manager={"api_write_concurrency": 4}
        )
    else:
        server = pygeoapi_factory()
    answers = collections.Counter()
    began = time.monotonic()
    job_ids = submit_burst(server.base_url, 500, 25, answers=answers)
    submitted = time.monotonic() - began
    documents = wait_all_finished(server.base_url, job_ids, timeout=600)
    logger.info(
        "500 submissions on %s: %s in %.1f s, all finished after %.1f s",
        database,
        dict(answers),
        submitted,
        time.monotonic() - began,
    )
    assert 500 not in answers
    assert len(job_ids) == answers[201]
    assert len(set(job_ids)) == len(job_ids)
    statuses = collections.Counter(d["status"] for d in documents.values())
    assert statuses == {"successful": len(job_ids)}, statuses
    # Every submission was accepted in the end (a 503 is sent again, as
    # "try again later" asks; they are counted in `answers`).
    assert len(job_ids) == 500, answers
