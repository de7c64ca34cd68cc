"""The CloudEvents NATS binding, built on `cloudevents.core`.

The SDK has no NATS binding, but its HTTP binding maps onto NATS headers one to one. Both modes
of the NATS binding are read; one (settings.publish_mode) is written:

- structured: the whole event as JSON in the body, `Content-Type: application/cloudevents+json`
  (the released NATS binding 1.0.2; a message with no `ce-` headers is read as structured);
- binary: attributes as `ce-*` headers, data in the body, its media type in
  `ce-datacontenttype` (the draft NATS binding; `Content-Type` is accepted too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

from cloudevents.core.bindings import http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import ValidationError

from events.catalogue import EVENT_SOURCE_PREFIX, KINDS_BY_TYPE, EventKind
from events.errors import CodedError
from events.models import EventData

Mode = Literal["structured", "binary"]
T = TypeVar("T", bound=EventData)

_FORMAT = JSONFormat()
_CE_PREFIX = "ce-"
_DATACONTENTTYPE_HEADER = "ce-datacontenttype"
_REQUIRED = ("id", "source", "type", "specversion")
# The deepest nesting of a message's JSON we read. Our events nest a few levels (the envelope,
# data, media or metadata); a deeper document is no event of ours, and one deeper than Python's
# recursion limit would crash the parser instead of being refused (issue 15, poison messages).
MAX_JSON_DEPTH = 32
TRACEPARENT = "traceparent"


class MalformedEvent(CodedError, ValueError):
    """A message that is not a valid KlipNote CloudEvent (code `malformed_event`); the message
    says why, for a person."""

    def __init__(self, message: str) -> None:
        super().__init__("malformed_event", message)


def new_event(
    kind: EventKind,
    data: EventData,
    *,
    function: str,
    subject: str | None = None,
    event_id: str | None = None,
    traceparent: str | None = None,
) -> CloudEvent:
    """A CloudEvent of a catalogued kind. A deterministic `event_id` makes a repeat a duplicate."""
    attributes: dict[str, Any] = {
        "type": kind.type,
        "source": EVENT_SOURCE_PREFIX + function,
        "datacontenttype": "application/json",
    }
    if event_id:
        attributes["id"] = event_id
    if subject:
        attributes["subject"] = subject
    if traceparent:
        attributes[TRACEPARENT] = traceparent
    return CloudEvent(attributes, data.model_dump(mode="json", exclude_none=False))


def encode(event: CloudEvent, mode: Mode = "structured") -> tuple[dict[str, str], bytes]:
    """NATS headers and body for an event."""
    if mode == "structured":
        message = http.to_structured(event, _FORMAT)
        return {"Content-Type": message.headers["content-type"]}, message.body
    message = http.to_binary(event, _FORMAT)
    headers = dict(message.headers)
    content_type = headers.pop("content-type", None)
    if content_type:
        headers[_DATACONTENTTYPE_HEADER] = content_type
    return headers, message.body


def decode(headers: dict[str, str] | None, body: bytes) -> CloudEvent:
    """The CloudEvent in a NATS message (or an HTTP request), or MalformedEvent with the reason:
    whatever the body, never another exception (JSON nested over `MAX_JSON_DEPTH` included), so
    the API answers 400 and a consumer dead-letters it."""
    headers = {name.lower(): value for name, value in (headers or {}).items()}
    binary = any(name.startswith(_CE_PREFIX) for name in headers) and not headers.get(
        "content-type", ""
    ).startswith("application/cloudevents")
    try:
        if binary:
            event = _decode_binary(headers, body)
            _check_depth(event.get_data())
        else:
            event = _decode_structured(body)  # its whole document checked, data included
        return event
    except MalformedEvent:
        raise
    except RecursionError as error:  # nested deeper than the parser goes: refused before the check
        raise MalformedEvent(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from error
    except (BaseCloudEventException, ValueError, TypeError, UnicodeDecodeError) as error:
        raise MalformedEvent(f"not a valid CloudEvent 1.0: {error}") from error


def _check_depth(document: Any) -> None:
    """MalformedEvent when `document` (parsed JSON) nests deeper than MAX_JSON_DEPTH."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:  # iterative: a deep document must not recurse here either
        value, depth = pending.pop()
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise MalformedEvent(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children)


def _decode_structured(body: bytes) -> CloudEvent:
    try:
        document = json.loads(body)
    except ValueError as error:
        raise MalformedEvent(f"structured-mode body is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise MalformedEvent("structured-mode body is not a JSON object")
    _check_depth(document)
    _require_attributes(document)
    return _FORMAT.read(CloudEvent, body)  # type: ignore[return-value]


def _decode_binary(headers: dict[str, str], body: bytes) -> CloudEvent:
    http_headers = {k: v for k, v in headers.items() if k.startswith(_CE_PREFIX)}
    content_type = http_headers.pop(_DATACONTENTTYPE_HEADER, None) or headers.get("content-type")
    if content_type:
        http_headers["content-type"] = content_type
    _require_attributes({k[len(_CE_PREFIX) :] for k in http_headers})
    return http.from_binary(http.HTTPMessage(http_headers, body), _FORMAT, CloudEvent)  # type: ignore[return-value]


def _require_attributes(present: Any) -> None:
    # The SDK's constructor fills in a missing id or time; on the wire that is an error.
    missing = [name for name in _REQUIRED if name not in present]
    if missing:
        raise MalformedEvent(f"missing required CloudEvents attribute(s): {', '.join(missing)}")


def kind_of(event: CloudEvent) -> EventKind:
    kind = KINDS_BY_TYPE.get(event.get_type())
    if kind is None:
        raise MalformedEvent(f"unknown event type {event.get_type()!r}")
    return kind


def parse_data(event: CloudEvent, model: type[T]) -> T:
    """The event's data as the catalogued model, or MalformedEvent listing what is wrong."""
    if kind_of(event).data is not model:
        raise MalformedEvent(f"event type {event.get_type()!r} does not carry {model.__name__}")
    data = event.get_data()
    try:
        if isinstance(data, (bytes, str)):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except RecursionError as error:  # data given as JSON text, nested deeper than the parser goes
        raise MalformedEvent(f"{event.get_type()} data is nested too deeply") from error
    except ValidationError as error:
        problems = describe_errors(error.errors(), "data")
        raise MalformedEvent(f"{event.get_type()} data does not match its schema: {problems}") from error


def describe_errors(errors: Sequence[Mapping[str, Any]], root: str) -> str:
    """Pydantic's validation errors in one line for a person: `where: what; ...` (`root` names
    the whole document)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e.get('loc', ())) or root}: {e.get('msg', '')}" for e in errors
    )


def traceparent_of(event: CloudEvent) -> str | None:
    value = event.get_extension(TRACEPARENT)
    return value if isinstance(value, str) else None
