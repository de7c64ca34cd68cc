"""The HTTP client the `klipnote` commands use: it talks only to the ingest API (`/v1`), never to
NATS or storage, so it works against any deployment it can reach.

Every failure a person can meet (API unreachable, a refused key, an unknown job, a job not done
yet, a rejected request) is a `ClientError` with a message that says what to do and an exit code.

Where a local file was submitted from is kept in a small local record (`submitted.jsonl` in
`$XDG_CACHE_HOME/klipnote`, default `~/.cache/klipnote`): the API only knows the file's name, and
`klipnote results JOB` writes the transcripts next to the input when it knows where that is.

Jobs come back as ingest's own API shapes (`functions.ingest.schema`: `JobView`, `JobPage`, the
job states), events as their catalogued data models (`events.catalogue`, `events.models`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from events import binding, catalogue
from events.catalogue import EventKind
from events.lifecycle import FINISHED_STATES, JobState
from events.models import EventData, TranscriptionCanceled, TranscriptionCompleted, TranscriptionFailed
from functions.ingest.schema import JobPage, JobView

# Exit codes of the commands (0: done).
EXIT_FAILED = 1  # the job failed, or the API rejected the request
EXIT_USAGE = 2  # bad arguments (argparse uses 2 too)
EXIT_UNREACHABLE = 3
EXIT_UNAUTHORIZED = 4
EXIT_NOT_FOUND = 5
EXIT_NOT_COMPLETED = 6

Shape = TypeVar("Shape", JobView, JobPage)

_RECONNECTS = 3  # a dropped event stream is resumed this often (events are replayed, deduplicated)
# The API's notices that end an event stream before the job's end (functions/ingest/api/events.py).
_TIMEOUT = "timeout"  # the stream's time limit: open it again
_EXPIRED = "expired"  # a job that ended so long ago that its events are gone: read its record


class ClientError(Exception):
    """What went wrong, in words for a person, and the command's exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True)
class JobEvent:
    """One lifecycle event of a job as the API's event stream carries it (a structured-mode
    CloudEvent): its id, its catalogued kind, and its data as that kind's model."""

    id: str
    kind: EventKind
    data: EventData

    @property
    def ends_job(self) -> bool:
        return self.kind in catalogue.JOB_ENDS


@dataclass(frozen=True)
class JobEnd:
    """How a job ended: `completed` with the formats it made, `failed` with the failure's code
    and message, or `canceled`."""

    state: JobState
    results: list[str]
    code: str | None = None
    message: str | None = None

    @classmethod
    def of_event(cls, event: JobEvent) -> JobEnd:
        """From a `completed`, `failed` or `canceled` event (ValueError for any other)."""
        if isinstance(event.data, TranscriptionCompleted):
            return cls(JobState.COMPLETED, sorted(event.data.results))
        if isinstance(event.data, TranscriptionFailed):
            return cls(JobState.FAILED, [], event.data.code, event.data.message)
        if isinstance(event.data, TranscriptionCanceled):
            return cls(JobState.CANCELED, [])
        raise ValueError(f"{event.kind.type} does not end a job")

    @classmethod
    def of_record(cls, job: JobView) -> JobEnd:
        """From a finished job's record (its events may have expired from the stream)."""
        if job.state == JobState.COMPLETED:
            return cls(JobState.COMPLETED, sorted(job.results))
        if job.state == JobState.CANCELED:
            return cls(JobState.CANCELED, [])
        error = job.error
        return cls(JobState.FAILED, [], error.code if error else None, error.message if error else None)


class KlipNote:
    """The ingest API over HTTP, with an optional bearer API key. Every method raises
    `ClientError` (a message for a person, an exit code) when the request cannot be made or the
    API refuses it."""

    def __init__(
        self,
        api: str,
        api_key: str | None = None,
        *,
        timeout: float = 60,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api = api.rstrip("/")
        self.has_key = bool(api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.api, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> KlipNote:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests --------------------------------------------------------------------------

    def submit(
        self,
        source: str | Path,
        *,
        model: str | None = None,
        language: str | None = None,
        formats: list[str] | None = None,
        audio_track: int | None = None,
        task: str | None = None,
        prompt: str | None = None,
        hotwords: str | None = None,
        temperature: float | None = None,
        delete_after: int | None = None,
        diarize: bool = False,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> JobView:
        """Start a job from a local file (uploaded) or an `s3://bucket/key` already in storage;
        the job as the API answers it (202: `id`, state `requested`). `task` (transcribe or
        translate), `prompt`, `hotwords`, `temperature` (0 to 1) are the decoding options,
        `delete_after` seconds after the job ends when it is deleted, `diarize` names the
        speakers, with `min_speakers` and `max_speakers` as bounds (`POST /v1/jobs`)."""
        form = {
            "model": model,
            "language": language,
            "formats": ",".join(formats or []),
            "audio_track": None if audio_track is None else str(audio_track),
            "task": task,
            "prompt": prompt,
            "hotwords": hotwords,
            "temperature": None if temperature is None else str(temperature),
            "delete_after": None if delete_after is None else str(delete_after),
            "diarize": "true" if diarize else None,
            "min_speakers": None if min_speakers is None else str(min_speakers),
            "max_speakers": None if max_speakers is None else str(max_speakers),
        }
        data = {name: value for name, value in form.items() if value}
        if isinstance(source, str) and source.startswith("s3://"):
            response = self._send("POST", "/v1/jobs", data={**data, "media": source})
        else:
            path = Path(source)
            with open(path, "rb") as body:
                response = self._send("POST", "/v1/jobs", files={"file": (path.name, body)}, data=data)
        return self._parse(JobView, response)

    def job(self, job_id: str) -> JobView:
        return self._parse(JobView, self._send("GET", f"/v1/jobs/{job_id}"), job_id)

    def cancel(self, job_id: str) -> JobView:
        """Cancel a job that has not ended; the job as the API answers it (state `canceled`, also
        for a job canceled before). ClientError `EXIT_FAILED` for a job that ended otherwise (409
        `job_finished`), `EXIT_NOT_FOUND` for no such job."""
        response = self._send("POST", f"/v1/jobs/{job_id}/cancel")
        if response.status_code == 409:
            _, message = _problem(response)
            raise ClientError(f"job {job_id} cannot be canceled: {message}", EXIT_FAILED)
        return self._parse(JobView, response, job_id)

    def delete(self, job_id: str) -> None:
        """Delete a job (`DELETE /v1/jobs/{id}`: its upload, results, events and record; a job
        still running is canceled first). A job deleted before counts as deleted: the API answers
        204 again. ClientError (EXIT_NOT_FOUND) when no such job ever existed."""
        response = self._send("DELETE", f"/v1/jobs/{job_id}")
        if response.status_code != 204:
            self._raise_for(response, job_id)

    def jobs(self, state: JobState | None = None, limit: int = 20, offset: int = 0) -> JobPage:
        """One page of jobs, newest first (`limit` at most 500, the API's cap)."""
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state.value
        return self._parse(JobPage, self._send("GET", "/v1/jobs", params=params))

    def wait_finished(self, job_id: str, timeout: float = 30) -> JobView:
        """The job record once it shows the job's end (or as it stands after `timeout` seconds).
        The end event comes first; the record follows a moment later (ingest projects it from
        the events)."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            job = self.job(job_id)
            if job.state in FINISHED_STATES or time.monotonic() > deadline:
                return job
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def download(self, job_id: str, fmt: str, target: Path) -> Path:
        """Write one result to `target` (through a temporary file: never a half-written one)."""
        partial = target.with_name(f".{target.name}.part")
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/transcript.{fmt}") as response:
                if response.status_code != 200:
                    response.read()
                    self._raise_for(response, job_id)
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.TransportError as error:
            partial.unlink(missing_ok=True)
            raise self._unreachable(error) from error
        partial.replace(target)
        return target

    def events(self, job_id: str) -> Iterator[JobEvent | None]:
        """The job's events as they happen, from its request to its end: its lifecycle events
        and the text of its segments (kind `catalogue.SEGMENT`, data `SegmentTranscribed`; every
        run's, each with its `run_id`: the latest run's text is the job's); `None` for each
        keep-alive (the stream's way of saying nothing happened for a while). A dropped stream
        is resumed, and one the API closed at its time limit (`timeout`) is opened again: the
        API replays the job's events, those already seen are skipped. It stops short of the
        job's end when the API no longer keeps the events of a job that ended long ago
        (`expired`): `job` says how it ended. Events of a type this client does not know are
        skipped."""
        seen: set[str] = set()
        drops = 0
        while True:
            try:
                for event in self._event_stream(job_id):
                    if event is None:
                        yield None
                    elif event == _EXPIRED:
                        return
                    elif event == _TIMEOUT:
                        break  # opened again below; not a drop
                    elif isinstance(event, JobEvent) and event.id not in seen:
                        seen.add(event.id)
                        yield event
                        if event.ends_job:
                            return
                else:
                    raise httpx.RemoteProtocolError("the event stream ended before the job did")
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout) as error:
                drops += 1
                if drops > _RECONNECTS:
                    raise ClientError(
                        f"lost the job's event stream from {self.api} ({error}); "
                        f"follow it again with `klipnote watch {job_id}`"
                    ) from error

    # -- plumbing --------------------------------------------------------------------------

    def _event_stream(self, job_id: str) -> Iterator[JobEvent | str | None]:
        """The messages of one event stream: a JobEvent per event this client knows, the name of
        the API's own notice that ends a stream early (`_TIMEOUT`, `_EXPIRED`), None per
        keep-alive; nothing for an event of a type this client does not know."""
        # Keep-alives come every 15 s: a read that waits longer than that means a dead stream.
        timeout = httpx.Timeout(30, read=45)
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
                if response.status_code != 200:
                    response.read()
                    self._raise_for(response, job_id)
                name = ""
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith(":"):
                        yield None
                    elif line.startswith("event:"):
                        name = line[6:].removeprefix(" ")
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:
                        # The notices' data is no CloudEvent (`{job_id, message}`): their name says it all.
                        if name in (_TIMEOUT, _EXPIRED):
                            yield name
                        elif (event := self._event("\n".join(data))) is not None:
                            yield event
                        name, data = "", []
        except httpx.ConnectError as error:
            raise self._unreachable(error) from error

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error

    def _event(self, body: str) -> JobEvent | None:
        """One SSE `data:` payload (a structured-mode CloudEvent) as a JobEvent; None for an
        event type this client does not know."""
        try:
            event = binding.decode(None, body.encode())
            kind = catalogue.KINDS_BY_TYPE.get(event.get_type())
            if kind is None:
                return None
            return JobEvent(event.get_id(), kind, binding.parse_data(event, kind.data))
        except binding.MalformedEvent as error:
            raise ClientError(
                f"the API at {self.api} sent an event this client cannot read: {error}"
            ) from error

    def _parse(self, shape: type[Shape], response: httpx.Response, job_id: str | None = None) -> Shape:
        """The answer as `shape`, or ClientError: the API's refusal, or an answer not of that shape."""
        if not 200 <= response.status_code < 300:
            self._raise_for(response, job_id)
        try:
            return shape.model_validate_json(response.content)
        except ValidationError as error:
            problems = binding.describe_errors(error.errors(), shape.__name__)
            raise ClientError(
                f"the API at {self.api} answered a {shape.__name__} this client cannot read: {problems}"
            ) from error

    def _unreachable(self, error: Exception) -> ClientError:
        return ClientError(
            f"cannot reach the KlipNote API at {self.api} ({error or type(error).__name__}). "
            "Is the stack running (`klipnote up`)? Otherwise point --api (or KLIPNOTE_API) at it.",
            EXIT_UNREACHABLE,
        )

    def _raise_for(self, response: httpx.Response, job_id: str | None) -> None:
        status = response.status_code
        code, message = _problem(response)
        if status == 401:
            if self.has_key:
                raise ClientError(
                    f"the API at {self.api} refused the API key (401 Unauthorized): "
                    "check --api-key or API_KEY",
                    EXIT_UNAUTHORIZED,
                )
            raise ClientError(
                f"the API at {self.api} requires an API key (401 Unauthorized): "
                "pass --api-key or set API_KEY",
                EXIT_UNAUTHORIZED,
            )
        if status == 404 and code == "job_not_found":
            raise ClientError(f"no job {job_id} at {self.api} (404)", EXIT_NOT_FOUND)
        if status == 409:
            raise ClientError(
                f"job {job_id} has not completed yet ({message}); follow it with `klipnote watch {job_id}`",
                EXIT_NOT_COMPLETED,
            )
        if status == 404:
            raise ClientError(f"not found (404): {code}: {message}", EXIT_NOT_FOUND)
        raise ClientError(f"the API answered {status}: {code}: {message}")


def _problem(response: httpx.Response) -> tuple[str, str]:
    """`(code, message)` of an error answer: `{detail: {code, message}}` (`events.errors`), or a
    proxy's page in front of the API."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return "error", response.text[:300] or response.reason_phrase
    if isinstance(detail, dict):
        return str(detail.get("code", "error")), str(detail.get("message", detail))
    return "error", str(detail)
