"""The CloudEvents NATS binding: every event type round-trips in both modes; malformed
messages are refused with a reason a person can act on."""

from __future__ import annotations

import json

import pytest

from events import binding, bus, catalogue
from events.catalogue import EventKind
from tests.support.samples import sample

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("mode", ["structured", "binary"])
@pytest.mark.parametrize("kind", catalogue.KINDS, ids=lambda kind: kind.type)
def test_every_event_type_round_trips(kind: EventKind, mode: binding.Mode) -> None:
    data = sample(kind)
    event = binding.new_event(kind, data, function="test", subject="job-1", traceparent=TRACEPARENT)

    headers, body = binding.encode(event, mode)
    decoded = binding.decode(headers, body)

    assert decoded.get_attributes() == event.get_attributes()
    assert binding.parse_data(decoded, kind.data) == data
    assert binding.traceparent_of(decoded) == TRACEPARENT
    if mode == "binary":
        assert headers["ce-type"] == kind.type and headers["ce-datacontenttype"] == "application/json"
    else:
        assert headers == {"Content-Type": "application/cloudevents+json"}


def test_subjects_come_from_the_catalogue() -> None:
    for kind in catalogue.KINDS:
        event = binding.new_event(kind, sample(kind), function="test")
        subject = bus.subject_for(event)
        assert subject.startswith(kind.subject_prefix + ".")
    dispatched = binding.new_event(catalogue.DISPATCHED, sample(catalogue.DISPATCHED), function="t")
    assert bus.subject_for(dispatched) == "transcribe.whisperx"


def _structured(**overrides: object) -> bytes:
    document: dict[str, object] = {
        "specversion": "1.0",
        "id": "e1",
        "source": "/test",
        "type": catalogue.QUEUED.type,
        "datacontenttype": "application/json",
        "data": {"job_id": "j1", "model": "whisperx"},
    }
    document.update(overrides)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


STRUCTURED = {"Content-Type": "application/cloudevents+json"}
MALFORMED = {
    "bad JSON": (STRUCTURED, b'{"specversion": "1.0", "id": ', "not JSON"),
    "not an object": (STRUCTURED, b"[1, 2]", "not a JSON object"),
    "missing id": (STRUCTURED, _structured(id=None), "missing required CloudEvents attribute(s): id"),
    "missing source and type": (STRUCTURED, _structured(source=None, type=None), "source, type"),
    "binary missing type": (
        {"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "/t", "ce-datacontenttype": "application/json"},
        b"{}",
        "missing required CloudEvents attribute(s): type",
    ),
    "wrong specversion": (STRUCTURED, _structured(specversion="0.3"), "specversion"),
    "unknown specversion": (STRUCTURED, _structured(specversion="2.0"), "specversion"),
    "headers of no kind at all": ({}, b"\xff\xfe not utf-8", "not"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_messages_are_refused_with_a_reason(case: str) -> None:
    headers, body, reason = MALFORMED[case]
    with pytest.raises(binding.MalformedEvent, match=reason.replace("(", r"\(").replace(")", r"\)")):
        binding.decode(headers, body)


def test_data_that_does_not_match_its_schema_is_refused() -> None:
    event = binding.decode(STRUCTURED, _structured(data={"job_id": 5, "extra": True}))
    with pytest.raises(binding.MalformedEvent) as refused:
        binding.parse_data(event, catalogue.QUEUED.data)
    message = str(refused.value)
    assert "does not match its schema" in message
    assert "job_id" in message and "model" in message and "extra" in message


def test_unknown_event_type_is_refused() -> None:
    event = binding.decode(STRUCTURED, _structured(type="com.example.other"))
    with pytest.raises(binding.MalformedEvent, match="unknown event type"):
        binding.kind_of(event)
