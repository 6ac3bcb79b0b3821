"""The schema validator used by the other tests rejects what it should."""

from __future__ import annotations

import pytest
from ogc import validate


@pytest.mark.parametrize(
    ("document", "schema"),
    [
        ({"x": {"foo": 1}}, "results"),
        ({"jobID": "a", "status": "successful"}, "statusInfo"),
        ({"jobID": "a", "status": "successful", "type": "process", "started": None}, "statusInfo"),
        ({"jobID": "a", "status": "done", "type": "process"}, "statusInfo"),
        ({"jobs": []}, "jobList"),
        ({"title": "no type"}, "exception"),
    ],
)
def test_invalid_documents_are_rejected(document, schema):
    with pytest.raises(AssertionError):
        validate(document, schema)


def test_string_outputs_are_accepted_despite_the_schema_ambiguity():
    validate({"a": "text", "b": {"value": "c29tZQ==", "mediaType": "image/png"}}, "results")
