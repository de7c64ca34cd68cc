"""Webhooks: the SSRF guard on its own, then deliveries by a real ingest process (real nats-server,
real SeaweedFS) to a real local receiver that verifies every signature with `standardwebhooks`.

The ingest runs in its own small stack (no model functions) with a compressed schedule; the test
publishes a job's request and then its end itself, and watches the receiver, the job record (KV
watch), the `webhook.attempted` events and the DLQ. Waits are on signals, with timeouts."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from cloudevents.core.v1.event import CloudEvent
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from standardwebhooks import Webhook

from events import binding, catalogue, storage
from events.bus import MSG_ID_HEADER, subject_for
from events.lifecycle import JobState
from events.models import (
    DeadLetter,
    ObjectRef,
    TranscriptionCompleted,
    TranscriptionFailed,
    TranscriptionRequested,
    WebhookAttempted,
    WebhookTarget,
)
from events.runtime.function import DELIVERY_ATTEMPT, PermanentError, RetryLater
from events.runtime.settlement import settled_deliveries
from events.settings import Settings
from functions.ingest.jobs import apply
from functions.ingest.links import ResultLinks
from functions.ingest.schema import JobRecord, WebhookStatus, shown_url
from functions.ingest.webhooks.delivery import WebhookDeliverer
from functions.ingest.webhooks.errors import WebhookRefused
from functions.ingest.webhooks.guard import (
    Allowlist,
    IPAddress,
    Resolver,
    WebhookGuard,
    forbidden_reason,
    parse_endpoint,
)
from functions.ingest.webhooks.schedule import next_delay, retry_after_s
from functions.ingest.webhooks.signing import webhook_id
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import messages_until, started_stack, wait_for_record
from tests.support.paths import AUDIO
from tests.support.webhook_receiver import Receiver, Reply, raw_serving, serving

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
SCHEDULE = [0.0, 0.3, 0.6]  # three attempts
TIMEOUT_S = 1.0
STATIC_TOKEN = "Bearer s3cret-static-token"
QUERY_TOKEN = "q-token-never-logged"
RECORD_WAIT_S = 15.0  # how long a test waits for the job record to get somewhere


# -- the guard, without servers ---------------------------------------------------------------


def hook_settings(**settings: Any) -> Settings:
    values: dict[str, Any] = {"webhook_secret": SECRET, "webhook_allowed_hosts": [], **settings}
    return Settings(**values)


def guard(**settings: Any) -> WebhookGuard:
    return WebhookGuard.from_settings(hook_settings(**settings))


def target(url: str) -> WebhookTarget:
    return WebhookTarget.model_construct(url=url, headers={})  # no URL validation: the guard's job


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://172.16.0.9/hook",
        "http://192.168.1.20:8080/hook",
        "http://127.0.0.1/hook",
        "http://127.9.9.9:9000/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
        "http://224.0.0.1/hook",
        "http://[::1]/hook",
        "http://[::]/hook",
        "http://[fe80::1]/hook",
        "http://[fc00::5]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://[2002:a9fe:a9fe::1]/hook",  # 6to4 wrapping 169.254.169.254
        "https://localhost:8443/hook",  # a name that resolves to loopback
        "http://LOCALHOST./hook",
        # KlipNote's own table, not the interpreter's (Python 3.11.7 finds these global):
        "http://192.0.0.192/hook",  # IETF protocol assignments
        "http://192.0.0.9/hook",
        "http://192.88.99.1/hook",  # the deprecated 6to4 relay anycast
        "http://198.18.0.1/hook",  # benchmarking
        "http://203.0.113.7/hook",  # documentation
        "http://240.0.0.1/hook",
        "http://255.255.255.255/hook",
        "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
        "http://[64:ff9b::c000:c0]/hook",  # NAT64 of 192.0.0.192
        "http://[::ffff:192.0.0.192]/hook",  # IPv4-mapped 192.0.0.192
        "http://[64:ff9b:1::1]/hook",  # local-use NAT64
        "http://[100::1]/hook",  # discard-only
        "http://[2001::1]/hook",  # Teredo
        "http://[2001:db8::1]/hook",  # documentation
        "http://[fec0::1]/hook",  # site-local: outside 2000::/3
        "http://[::a9fe:a9fe]/hook",  # IPv4-compatible: outside 2000::/3
    ],
)
async def test_guard_refuses_private_addresses(url: str) -> None:
    hooks = guard()
    with pytest.raises(WebhookRefused) as refused:
        hooks.check(target(url))
    assert refused.value.code == "webhook_forbidden"
    with pytest.raises(WebhookRefused):
        await hooks.check_async(target(url))


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/hook", ["127.0.0.1"]),
        ("http://localhost:8080/hook", ["127.0.0.0/8"]),
        ("http://localhost:8080/hook", ["localhost"]),
        ("http://10.20.30.40/hook", ["10.0.0.0/8"]),
        ("http://[::1]:8080/hook", ["::1"]),
        ("http://93.184.215.14/hook", []),  # a public address needs no allowlist
        ("https://[2606:4700::6810:84e5]/hook", []),
        ("https://no-such-host.invalid/hook", []),  # unresolvable now: checked again on delivery
    ],
)
async def test_guard_accepts_public_and_allowlisted(url: str, allowed: list[str]) -> None:
    hooks = guard(webhook_allowed_hosts=allowed)
    hooks.check(target(url))
    await hooks.check_async(target(url))


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "gopher://127.0.0.1/"])
def test_guard_refuses_other_schemes(url: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        guard(webhook_allowed_hosts=["127.0.0.1"]).check(target(url))
    assert refused.value.code == "webhook_scheme"


def test_no_secret_no_webhooks() -> None:
    with pytest.raises(WebhookRefused) as refused:
        guard(webhook_secret=None).check(target("https://93.184.215.14/hook"))
    assert refused.value.code == "webhook_unsigned"


def test_guard_details() -> None:
    import ipaddress

    assert forbidden_reason(ipaddress.ip_address("169.254.169.254")) == "a cloud metadata address"
    assert forbidden_reason(ipaddress.ip_address("8.8.8.8")) is None
    allow = Allowlist.parse(["Hooks.Example.", "10.0.0.0/8", "[::1]"])
    assert allow.allows_host("hooks.example")
    assert allow.allows_address(ipaddress.ip_address("10.9.8.7"))
    assert allow.allows_address(ipaddress.ip_address("::1"))
    assert not allow.allows_address(ipaddress.ip_address("192.168.0.1"))


def test_the_forbidden_ranges_are_klipnotes_own_table() -> None:
    """The guard judges by its table of the IANA special-purpose registries, so what it refuses
    does not change with the interpreter: 192.0.0.192 passes Python 3.11.7's own checks."""
    import ipaddress

    def reason(text: str) -> str | None:
        return forbidden_reason(ipaddress.ip_address(text))

    assert reason("192.0.0.192") == "IETF protocol assignments (RFC 6890)"
    assert reason("::ffff:192.0.0.192") == reason("64:ff9b::c000:c0") == reason("192.0.0.192")
    assert reason("2002:c000:c0::1") == reason("192.0.0.192")  # 6to4 wrapping it
    assert reason("64:ff9b:1::1") == "local-use NAT64 (RFC 8215)"
    assert reason("fe80::1%2") == "link-local (RFC 4291)"  # a scoped address too
    # Public addresses pass, wrapped in IPv6 or not.
    for public in ("8.8.8.8", "93.184.215.14", "64:ff9b::808:808", "2002:808:808::1", "2606:4700::1"):
        assert reason(public) is None, public


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.exa mple.com/hook",  # a space in the host
        "http://hooks.example.com/a b",  # ...or anywhere
        "http://hooks.exa\tmple.com/hook",  # a tab, which urlsplit would silently drop
        "http://hooks.example.com/hook\n",
        "http://hooks.example.com/\x7f",
        "http://\u2603.example/hook",  # a snowman: IDNA2003 encodes it, IDNA2008 does not
        "http://xn--a.example/hook",  # an A-label that is no punycode
        "http://hooks_1.example/hook",  # '_' is no letter, digit nor hyphen
        "http://a..b/hook",  # an empty label
        "http://" + "a" * 64 + ".example/hook",  # a label over 63 letters
        "http://hooks.example.com:99999/hook",  # no port
    ],
)
def test_webhook_urls_no_delivery_could_use_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        guard().check(target(url))
    assert refused.value.code == "webhook_invalid" and refused.value.message


def test_idna2008_host_names_are_resolved_as_their_a_label() -> None:
    assert parse_endpoint("https://Bücher.example/hook").host == "xn--bcher-kva.example"
    assert parse_endpoint("https://faß.example/hook").host == "xn--fa-hia.example"  # IDNA2003: fass


def test_retry_after_and_schedule() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("120") == 120.0
    assert retry_after_s(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert retry_after_s(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None
    # A receiver's header read defensively: digits other than ASCII's, Latin-1 bytes, absurd dates.
    for odd in ("²", "١٢", "Ⅻ", "\xff\xfe", "1.5", "-3", "Wed, 21 Oct 99999 07:28:00 GMT"):
        assert retry_after_s(odd) is None, odd
    assert retry_after_s("9" * 40) == 24 * 3600  # honoured up to a day
    schedule = [0, 5, 300]
    assert next_delay(schedule, 1, None) == 5
    assert next_delay(schedule, 1, 60) == 60  # Retry-After asks for longer
    assert next_delay(schedule, 2, 60) == 300  # the schedule is longer
    assert next_delay(schedule, 1, 10**9) == 24 * 3600  # honoured up to a day
    assert next_delay(schedule, 3, None) is None  # that was the last attempt
    hook = webhook_id("job1", catalogue.COMPLETED)
    assert hook == webhook_id("job1", catalogue.COMPLETED) != webhook_id("job1", catalogue.FAILED)
    assert "." not in hook


# -- the deliverer in-process (the guard at delivery time) -------------------------------------


class FakeJobs:
    """A job store (a `JobLedger`) of a few records, projected with the real projector."""

    def __init__(self, *records: JobRecord) -> None:
        self.records = {record.id: record for record in records}

    @property
    def record(self) -> JobRecord:
        """The first record (the only one, for most tests)."""
        return next(iter(self.records.values()))

    async def get(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)

    async def project(
        self, event: CloudEvent, job_id: str, webhook_target: WebhookTarget | None = None
    ) -> JobRecord | None:
        record = self.records[job_id]
        self.records[job_id] = apply(record, event, webhook_target) or record
        return self.records[job_id]


def ended_job(job_id: str, url: str) -> JobRecord:
    return JobRecord(
        id=job_id,
        state=JobState.COMPLETED,
        media=ObjectRef(bucket="uploads", key="talk.wav"),
        webhook=WebhookStatus(url=shown_url(url)),
        webhook_target=WebhookTarget(url=url, headers={"Authorization": STATIC_TOKEN}),
    )


def in_process(
    url: str | dict[str, str],
    tls: ssl.SSLContext | None = None,
    resolve: Resolver | None = None,
    **settings: Any,
) -> tuple[WebhookDeliverer, FakeJobs]:
    """A deliverer of one job, `job1`, to `url`, or of several (`{job_id: url}`)."""
    values = hook_settings(webhook_schedule_s=SCHEDULE, **settings)
    urls = url if isinstance(url, dict) else {"job1": url}
    jobs = FakeJobs(*(ended_job(job_id, job_url) for job_id, job_url in urls.items()))
    # The job in hand completed with no results: the real links part presigns nothing (no store call).
    links = ResultLinks(storage.client(values), values.result_link_expiry_s)
    hooks = WebhookDeliverer(values, jobs, links, WebhookGuard.from_settings(values, resolve), tls=tls)
    return hooks, jobs


async def deliver_once(
    hooks: WebhookDeliverer, delivery: int, job_id: str = "job1"
) -> tuple[list[WebhookAttempted], Exception | None]:
    done = TranscriptionCompleted(job_id=job_id, run_id="r", model="whisperx", results={})
    event = binding.new_event(catalogue.COMPLETED, done, function="optimize", event_id=f"{job_id}:completed")
    token = DELIVERY_ATTEMPT.set(delivery)
    seen: list[WebhookAttempted] = []
    try:
        async for out in hooks.deliver(event):
            seen.append(binding.parse_data(out, WebhookAttempted))
    except Exception as error:
        return seen, error
    finally:
        DELIVERY_ATTEMPT.reset(token)
    return seen, None


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://localhost:9/hook", "http://[::1]:9/hook"],
)
async def test_refused_at_delivery_is_a_dead_letter(url: str) -> None:
    hooks, jobs = in_process(url)
    seen, error = await deliver_once(hooks, 1)
    assert isinstance(error, PermanentError) and error.code == "webhook_forbidden"
    assert [(a.outcome, a.attempt) for a in seen] == [("refused", 1)]
    assert jobs.record.webhook is not None and jobs.record.webhook.state == "failed"


async def test_unresolvable_host_is_retried_then_given_up() -> None:
    hooks, jobs = in_process("https://no-such-host.invalid/hook?token=" + QUERY_TOKEN)
    seen, error = await deliver_once(hooks, 1)
    assert isinstance(error, RetryLater) and error.delay_s == SCHEDULE[1]
    assert seen[0].outcome == "retrying" and "could not resolve" in (seen[0].error or "")
    seen, error = await deliver_once(hooks, 2)
    assert isinstance(error, RetryLater) and error.delay_s == SCHEDULE[2] and seen[0].attempt == 2
    seen, error = await deliver_once(hooks, 3)
    assert isinstance(error, PermanentError) and error.code == "webhook_exhausted"
    assert [(a.outcome, a.attempt) for a in seen] == [("gave_up", 3)]
    assert_no_secrets(error.message)
    assert jobs.record.webhook is not None
    assert jobs.record.webhook.state == "failed" and jobs.record.webhook.attempts == 3


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for `localhost` only."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_goes_to_the_checked_address_with_the_hosts_name(tls_cert: tuple[Path, Path]) -> None:
    """The call is aimed at the address the guard checked, yet TLS verifies the URL's host name
    (SNI) and the receiver sees its own Host header."""
    cert, key = tls_cert
    seen_hosts: list[str] = []
    verified: list[Any] = []

    async def handle(request: web.Request) -> web.Response:
        seen_hosts.append(request.headers["Host"])
        verified.append(Webhook(SECRET).verify(await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        hooks, _ = in_process(f"https://localhost:{port}/hook", trusted, webhook_allowed_hosts=["localhost"])
        attempts, error = await deliver_once(hooks, 1)
        assert error is None and [a.outcome for a in attempts] == ["delivered"]
        assert seen_hosts == [f"localhost:{port}"] and verified[0]["data"]["id"] == "job1"
        # The same server under a name its certificate does not carry: TLS refuses it.
        hooks, _ = in_process(f"https://127.0.0.1:{port}/hook", trusted, webhook_allowed_hosts=["127.0.0.1"])
        attempts, error = await deliver_once(hooks, 1)
        assert isinstance(error, RetryLater) and "connection failed" in (attempts[0].error or "")
    finally:
        await runner.cleanup()


async def never_resolves(host: str, port: int) -> list[IPAddress]:
    """A resolver that never answers (a black-holed DNS server)."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_resolver_that_never_answers_ends_the_attempt_within_its_deadline() -> None:
    """DNS is inside the attempt's one deadline: a black-holed resolver is a `retrying` attempt
    after WEBHOOK_TIMEOUT_S, not a delivery slot held for as long as the resolver likes."""
    url = "https://hooks.example.com/hook"
    hooks, jobs = in_process(url, resolve=never_resolves, webhook_timeout_s=TIMEOUT_S)
    async with asyncio.timeout(TIMEOUT_S * 20):  # a hang fails here, not after minutes
        seen, error = await deliver_once(hooks, 1)
        # At submission the same resolution is bounded too: accepted (unresolved), checked at delivery.
        await hooks.guard.check_async(WebhookTarget(url=url))

    assert isinstance(error, RetryLater) and error.delay_s == SCHEDULE[1]
    assert [(a.outcome, a.attempt) for a in seen] == [("retrying", 1)]
    assert seen[0].error == f"no answer within {TIMEOUT_S:g}s (resolving the host)"
    assert jobs.record.webhook is not None
    assert jobs.record.webhook.state == "retrying" and jobs.record.webhook.attempts == 1


async def test_a_receiver_that_accepts_and_never_answers_ends_within_the_deadline() -> None:
    async with raw_serving(None) as blackhole:
        hooks, _ = in_process(
            f"{blackhole.url}/hook", webhook_allowed_hosts=["127.0.0.1"], webhook_timeout_s=TIMEOUT_S
        )
        async with asyncio.timeout(TIMEOUT_S * 20):  # a hang fails here, not after minutes
            seen, error = await deliver_once(hooks, 1)

    assert blackhole.connections == 1
    assert isinstance(error, RetryLater) and [(a.outcome, a.attempt) for a in seen] == [("retrying", 1)]
    assert (seen[0].error or "").startswith(f"no answer within {TIMEOUT_S:g}s")


async def test_a_slow_host_delays_only_its_own_jobs() -> None:
    """At most WEBHOOK_HOST_CONCURRENCY attempts per host in flight: a job beyond it waits
    (RetryLater, no attempt counted) while other hosts' jobs are delivered at once."""
    async with raw_serving(None) as blackhole, serving(SECRET) as other:
        fast = other.url.replace("127.0.0.1", "localhost") + "/hook/fast"  # another host name
        urls = {"slow1": f"{blackhole.url}/hook", "slow2": f"{blackhole.url}/hook", "fast": fast}
        hooks, jobs = in_process(
            urls,
            webhook_allowed_hosts=["127.0.0.1", "localhost"],
            webhook_timeout_s=120.0,  # the test hangs up on the attempt itself: no timing involved
            webhook_host_concurrency=1,
        )
        async with asyncio.timeout(60):
            first = asyncio.create_task(deliver_once(hooks, 1, "slow1"))
            await blackhole.connected.wait()  # slow1's attempt holds the host's one slot

            seen, error = await deliver_once(hooks, 1, "slow2")
            assert seen == [] and isinstance(error, RetryLater) and "busy" in str(error)
            assert error.delay_s == 60.0  # half a deadline
            slow2 = jobs.records["slow2"].webhook
            assert slow2 is not None and slow2.attempts == 0 and slow2.state == "pending"

            seen, error = await deliver_once(hooks, 1, "fast")
            assert error is None and [a.outcome for a in seen] == ["delivered"]
            assert len(other.hits["fast"]) == 1
            assert not first.done()  # delivered while the slow host still holds its attempt

            # Waits are deliveries too: once the message has only enough left for its attempts,
            # the attempt goes ahead beyond the bound rather than the message running out.
            late = settled_deliveries(catalogue.INGEST_WEBHOOKS, hooks.settings) - len(SCHEDULE) + 1
            blackhole.connected.clear()
            forced = asyncio.create_task(deliver_once(hooks, late, "slow2"))
            await blackhole.connected.wait()
            assert blackhole.connections == 2

            blackhole.hang_up()
            for task in (first, forced):
                seen, error = await task
                assert isinstance(error, RetryLater) and [a.outcome for a in seen] == ["retrying"]

            blackhole.connected.clear()  # the slots are free again: slow2's next attempt goes ahead
            again = asyncio.create_task(deliver_once(hooks, late + 1, "slow2"))
            await blackhole.connected.wait()
            blackhole.hang_up()
            seen, error = await again
            assert [(a.outcome, a.attempt) for a in seen] == [("retrying", 2)]


@pytest.mark.parametrize("status", [200, 503])
async def test_a_non_ascii_retry_after_is_ignored(status: int) -> None:
    """'²' is a digit to `str.isdigit` and no number to `float`: it crashed the deliverer after
    the receiver had accepted the call (then delivered again)."""
    reply = (
        f"HTTP/1.1 {status} X\r\nRetry-After: ".encode()
        + "²".encode()
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    async with raw_serving(reply) as raw:
        hooks, _ = in_process(f"{raw.url}/hook", webhook_allowed_hosts=["127.0.0.1"])
        seen, error = await deliver_once(hooks, 1)

    if status == 200:
        assert error is None and [(a.outcome, a.status_code) for a in seen] == [("delivered", 200)]
    else:
        assert isinstance(error, RetryLater) and error.delay_s == SCHEDULE[1]  # the schedule's
        assert [(a.outcome, a.next_attempt_in_s) for a in seen] == [("retrying", SCHEDULE[1])]


# Tokens no timestamp, id or message could contain by chance (`T0` was in every ISO time from
# midnight to 10 a.m.).
SECRET_URL = "http://hookuser:pw-7f3a@hooks.example.com:{port}/Tq7Zk0/Bx4Rw1/pathsecret-9c2e?token=tk-5521"


def assert_url_redacted(text: str) -> None:
    for secret in ("hookuser", "pw-7f3a", "Tq7Zk0", "Bx4Rw1", "pathsecret-9c2e", "tk-5521", "s3cret"):
        assert secret not in text, (secret, text)


async def test_delivery_logs_show_no_credentials_path_or_query(caplog: pytest.LogCaptureFixture) -> None:
    """Every line the webhooks package logs, and every reason it gives, shows a webhook URL as
    scheme://host:port/… only."""
    import ipaddress
    import logging

    async def to_loopback(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]

    async def to_metadata(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("169.254.169.254")]

    caplog.set_level(logging.DEBUG, logger="functions.ingest.webhooks")
    reasons = []
    async with raw_serving(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n") as raw:
        url = SECRET_URL.format(port=raw.url.rsplit(":", 1)[1])
        hooks, jobs = in_process(url, resolve=to_loopback, webhook_allowed_hosts=["hooks.example.com"])
        for delivery in (1, 2, 3):  # retrying, retrying, gave up
            _, error = await deliver_once(hooks, delivery)
            reasons.append(str(error))
        assert raw.connections == 3 and isinstance(error, PermanentError)
        refused, _ = in_process(url, resolve=to_metadata)
        _, error = await deliver_once(refused, 1)
        reasons.append(str(error))

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "webhook of job job1" in logged and "refused" in logged and "gave up" in logged
    assert f"http://hooks.example.com:{raw.url.rsplit(':', 1)[1]}/…" in logged
    assert_url_redacted(logged + "\n".join(reasons) + jobs.record.model_dump_json(exclude={"webhook_target"}))


# -- a real receiver -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(SECRET) as hooks:
        yield hooks


# -- an ingest on real servers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def hook_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    settings = Settings(
        webhook_secret=SECRET,
        webhook_schedule_s=SCHEDULE,
        webhook_timeout_s=TIMEOUT_S,
        webhook_allowed_hosts=["127.0.0.1"],
        uploads_reconcile_interval_s=0,
        enabled_models=["whisperx"],
        result_link_expiry_s=600,
    )
    yield from started_stack(tmp_path_factory, "webhooks", settings, functions=["ingest"])


async def publish(js: JetStreamContext, event: Any) -> PubAck:
    headers, body = binding.encode(event)
    headers[MSG_ID_HEADER] = event.get_id()
    return await js.publish(subject_for(event), body, headers=headers)


def hook_url(receiver: Receiver, name: str) -> str:
    return f"{receiver.url}/hook/{name}?token={QUERY_TOKEN}"


async def request_job(js: JetStreamContext, url: str, job_id: str | None = None) -> str:
    """Publish a job request with a webhook; return once ingest's projector has its record."""
    job_id = job_id or uuid.uuid4().hex
    request = TranscriptionRequested(
        job_id=job_id,
        media=ObjectRef(bucket="uploads", key=f"{job_id}/talk.wav"),
        language="en",
        metadata={"customer": "acme", "ticket": "T-42"},
        webhook=WebhookTarget(url=url, headers={"Authorization": STATIC_TOKEN, "X-Tenant": "acme"}),
    )
    event = binding.new_event(
        catalogue.REQUESTED, request, function="ingest", subject=job_id, event_id=f"{job_id}:requested"
    )
    await publish(js, event)
    await wait_for_record(js, job_id, lambda record: True, RECORD_WAIT_S)
    return job_id


async def complete(js: JetStreamContext, job_id: str, event_id: str | None = None) -> PubAck:
    done = TranscriptionCompleted(
        job_id=job_id,
        run_id="run1",
        model="whisperx",
        language="en",
        results={"txt": ObjectRef(bucket="results", key=f"{job_id}/transcript.txt")},
    )
    event = binding.new_event(
        catalogue.COMPLETED,
        done,
        function="optimize",
        subject=job_id,
        event_id=event_id or f"{job_id}:completed",
    )
    return await publish(js, event)


def webhook_state(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda record: (record.get("webhook") or {}).get("state") in states


def attempted(msg: Msg) -> WebhookAttempted:
    return binding.parse_data(binding.decode(msg.headers, msg.data), WebhookAttempted)


def dead_letter(msg: Msg) -> DeadLetter:
    return binding.parse_data(binding.decode(msg.headers, msg.data), DeadLetter)


async def attempts_until(
    js: JetStreamContext, job_id: str, outcomes: set[str], timeout: float = 15
) -> list[WebhookAttempted]:
    """The job's `webhook.attempted` events, up to the first with one of `outcomes`."""
    messages = await messages_until(
        js, catalogue.WEBHOOK.subject(job_id), lambda msg: attempted(msg).outcome in outcomes, timeout
    )
    return [attempted(msg) for msg in messages]


async def dead_letter_of(js: JetStreamContext, subject: str, timeout: float = 15) -> DeadLetter:
    messages = await messages_until(
        js,
        catalogue.dead_letter_subject(catalogue.INGEST_WEBHOOKS.durable),
        lambda msg: dead_letter(msg).subject == subject,
        timeout,
    )
    return dead_letter(messages[-1])


async def settled(js: JetStreamContext, ack: PubAck, timeout: float = 15) -> None:
    """Wait until the webhook consumer has acknowledged (or terminated) the message for good."""
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info(catalogue.JOBS.name, catalogue.INGEST_WEBHOOKS.durable)
            if info.ack_floor.stream_seq is not None and info.ack_floor.stream_seq >= ack.seq:
                return
            await asyncio.sleep(0.05)  # consumer state has no watch; this polls a condition


def assert_no_secrets(text: str) -> None:
    assert QUERY_TOKEN not in text and "s3cret" not in text, text


# -- deliveries ----------------------------------------------------------------------------------


async def test_delivered_once_signed_with_links_and_metadata(
    hjs: JetStreamContext, receiver: Receiver, hook_stack: EmbeddedStack
) -> None:
    job_id = await request_job(hjs, hook_url(receiver, "ok"), job_id=f"ok{uuid.uuid4().hex[:8]}")
    store = storage.client(hook_stack.settings)
    text = b"And so, my fellow Americans.\n"
    await asyncio.to_thread(
        store.put_object, "results", f"{job_id}/transcript.txt", io.BytesIO(text), len(text)
    )
    ack = await complete(hjs, job_id)

    hits = await receiver.wait_hits("ok", 1)
    record = await wait_for_record(hjs, job_id, webhook_state("delivered"), RECORD_WAIT_S)
    await settled(hjs, ack)
    hit = receiver.hits["ok"][0]
    assert len(receiver.hits["ok"]) == 1 == len(hits)
    assert hit.payload is not None, "signature did not verify"
    assert hit.path_qs == f"/hook/ok?token={QUERY_TOKEN}"  # the query reaches the receiver
    assert hit.headers["Authorization"] == STATIC_TOKEN and hit.headers["X-Tenant"] == "acme"
    assert hit.headers["webhook-id"] == webhook_id(job_id, catalogue.COMPLETED)
    assert hit.headers["Content-Type"] == "application/json"
    payload = hit.payload
    assert payload["type"] == "transcription.completed"
    data = payload["data"]
    assert data["id"] == job_id and data["state"] == "completed"
    assert data["model"] == "whisperx" and data["language"] == "en"
    assert data["metadata"] == {"customer": "acme", "ticket": "T-42"}
    assert data["error"] is None
    async with httpx.AsyncClient() as client:  # the result link works as it is
        got = await client.get(data["links"]["txt"])
    assert got.status_code == 200 and got.content == text

    status = record["webhook"]
    assert status["attempts"] == 1 and status["status_code"] == 200
    assert status["url"] == f"{receiver.url}/…"  # neither path nor query in the record
    assert "webhook_target" in record  # kept for the deliverer (the API hides it)
    assert_no_secrets(json.dumps(status))


async def test_retried_on_503_with_the_same_webhook_id(hjs: JetStreamContext, receiver: Receiver) -> None:
    receiver.scripts["flaky"] = [Reply(503), Reply(503)]
    job_id = await request_job(hjs, hook_url(receiver, "flaky"))
    await complete(hjs, job_id)

    hits = await receiver.wait_hits("flaky", 3)
    record = await wait_for_record(hjs, job_id, webhook_state("delivered"), RECORD_WAIT_S)
    attempts = await attempts_until(hjs, job_id, {"delivered"})
    assert len({hit.headers["webhook-id"] for hit in hits}) == 1
    assert all(hit.payload is not None for hit in hits)
    assert [(a.attempt, a.outcome, a.status_code) for a in attempts] == [
        (1, "retrying", 503),
        (2, "retrying", 503),
        (3, "delivered", 200),
    ]
    assert attempts[0].next_attempt_in_s == SCHEDULE[1] and attempts[1].next_attempt_in_s == SCHEDULE[2]
    # the schedule is a lower bound between attempts
    assert hits[1].at - hits[0].at >= SCHEDULE[1] - 0.05
    assert hits[2].at - hits[1].at >= SCHEDULE[2] - 0.05
    assert record["webhook"]["attempts"] == 3 and record["webhook"]["state"] == "delivered"


async def test_retry_after_is_honoured(hjs: JetStreamContext, receiver: Receiver) -> None:
    receiver.scripts["busy"] = [Reply(429, {"Retry-After": "2"})]
    job_id = await request_job(hjs, hook_url(receiver, "busy"))
    await complete(hjs, job_id)

    hits = await receiver.wait_hits("busy", 2)
    attempts = await attempts_until(hjs, job_id, {"delivered"})
    assert attempts[0].status_code == 429 and attempts[0].next_attempt_in_s == 2.0
    assert hits[1].at - hits[0].at >= 2.0 - 0.05  # longer than the schedule's 0.3 s


async def test_410_stops(hjs: JetStreamContext, receiver: Receiver) -> None:
    receiver.scripts["gone"] = [Reply(410)]
    job_id = await request_job(hjs, hook_url(receiver, "gone"))
    ack = await complete(hjs, job_id)

    record = await wait_for_record(hjs, job_id, webhook_state("failed"), RECORD_WAIT_S)
    await settled(hjs, ack)  # acknowledged: JetStream will not offer it again
    assert len(receiver.hits["gone"]) == 1
    assert record["webhook"]["status_code"] == 410 and record["webhook"]["attempts"] == 1
    attempts = await attempts_until(hjs, job_id, {"gave_up"})
    assert [a.outcome for a in attempts] == ["gave_up"]


async def test_a_hanging_receiver_is_a_failed_attempt(hjs: JetStreamContext, receiver: Receiver) -> None:
    receiver.scripts["hang"] = [Reply(hang=True)]
    job_id = await request_job(hjs, hook_url(receiver, "hang"))
    started = time.monotonic()
    await complete(hjs, job_id)

    attempts = await attempts_until(hjs, job_id, {"delivered"})
    assert attempts[0].outcome == "retrying" and attempts[0].status_code is None
    assert attempts[0].error is not None and "no answer within" in attempts[0].error
    assert attempts[-1].attempt == 2
    assert time.monotonic() - started >= TIMEOUT_S  # it waited for the timeout, not forever
    record = await wait_for_record(hjs, job_id, webhook_state("delivered"), RECORD_WAIT_S)
    assert record["webhook"]["attempts"] == 2


async def test_exhausted_goes_to_the_dlq(hjs: JetStreamContext, receiver: Receiver) -> None:
    receiver.scripts["down"] = [Reply(500), Reply(502), Reply(503)]
    job_id = await request_job(hjs, hook_url(receiver, "down"))
    await complete(hjs, job_id)

    subject = catalogue.COMPLETED.subject(job_id)
    letter = await dead_letter_of(hjs, subject)
    assert letter.subject == subject and letter.consumer == catalogue.INGEST_WEBHOOKS.durable
    assert letter.reason.startswith("webhook_exhausted: gave up after 3 attempt(s)")
    assert "HTTP 503" in letter.reason
    assert_no_secrets(letter.reason)
    record = await wait_for_record(hjs, job_id, webhook_state("failed"), RECORD_WAIT_S)
    assert record["webhook"]["attempts"] == 3 and record["webhook"]["status_code"] == 503
    assert len(receiver.hits["down"]) == 3
    attempts = await attempts_until(hjs, job_id, {"gave_up"})
    assert [a.outcome for a in attempts] == ["retrying", "retrying", "gave_up"]


async def test_refused_by_the_router_is_recorded(hjs: JetStreamContext) -> None:
    # Published straight onto NATS, the request meets the guard in ingest's router: the job fails
    # with the refusal, and the webhook status says so without any call.
    job_id = await request_job(hjs, "http://169.254.169.254/latest/meta-data/?token=" + QUERY_TOKEN)

    record = await wait_for_record(
        hjs, job_id, lambda r: r["state"] == "failed" and webhook_state("failed")(r), RECORD_WAIT_S
    )
    assert record["error"]["code"] == "webhook_forbidden"
    assert "cloud metadata" in record["webhook"]["error"] and record["webhook"]["status_code"] is None
    attempts = await attempts_until(hjs, job_id, {"refused"})
    assert [a.outcome for a in attempts] == ["refused"]
    assert_no_secrets(json.dumps(record["webhook"]) + json.dumps(record["error"]))


async def test_a_repeated_end_is_delivered_once(hjs: JetStreamContext, receiver: Receiver) -> None:
    job_id = await request_job(hjs, hook_url(receiver, "dup"))
    first = await complete(hjs, job_id)
    again = await complete(hjs, job_id)  # the same event: JetStream drops it
    assert again.duplicate and again.seq == first.seq
    await wait_for_record(hjs, job_id, webhook_state("delivered"), RECORD_WAIT_S)
    # The end announced again under another id (a rerun): a second message, no second call.
    rerun = await complete(hjs, job_id, event_id=f"{job_id}:completed:rerun")
    assert not rerun.duplicate
    failed = TranscriptionFailed(job_id=job_id, code="late", message="a late failure", function="optimize")
    late = await publish(
        hjs, binding.new_event(catalogue.FAILED, failed, function="optimize", event_id=f"{job_id}:failed")
    )
    await settled(hjs, late)
    assert len(receiver.hits["dup"]) == 1


async def test_a_failed_job_is_announced(hjs: JetStreamContext, receiver: Receiver) -> None:
    job_id = await request_job(hjs, hook_url(receiver, "failed"))
    failed = TranscriptionFailed(
        job_id=job_id, code="media_unreadable", message="not audio", function="whisperx"
    )
    await publish(
        hjs, binding.new_event(catalogue.FAILED, failed, function="whisperx", event_id=f"{job_id}:f")
    )

    hits = await receiver.wait_hits("failed", 1)
    payload = hits[0].payload
    assert payload is not None and payload["type"] == "transcription.failed"
    assert payload["data"]["error"] == {"code": "media_unreadable", "message": "not audio"}
    assert payload["data"]["links"] == {} and payload["data"]["state"] == "failed"
    assert hits[0].headers["webhook-id"] == webhook_id(job_id, catalogue.FAILED)
    await wait_for_record(hjs, job_id, webhook_state("delivered"), RECORD_WAIT_S)


def test_ingest_logs_no_secrets(hook_stack: EmbeddedStack) -> None:
    log = Path(hook_stack.child("ingest").log_path).read_text(errors="replace")
    assert "webhook of job" in log
    assert_no_secrets(log)


@pytest.mark.parametrize(
    "url",
    ["http://hooks.exa mple.com/hook", "http://hooks.exa\tmple.com/hook", "http://\u2603.example/hook"],
    ids=["space", "tab", "idna2008-invalid"],
)
async def test_the_api_refuses_webhook_urls_no_delivery_could_use(
    hook_stack: EmbeddedStack, url: str
) -> None:
    """Refused at submission (422 `webhook_invalid`) rather than accepted and failing every attempt."""
    async with httpx.AsyncClient(base_url=hook_stack.api_url, timeout=60) as api:
        with open(AUDIO / "jfk.flac", "rb") as body:
            response = await api.post(
                "/v1/jobs", files={"file": ("jfk.flac", body)}, data={"webhook_url": url}
            )

    assert response.status_code == 422, response.text
    assert response.json()["detail"]["code"] == "webhook_invalid"


async def test_the_job_view_shows_no_credentials_path_or_query(
    hjs: JetStreamContext, hook_stack: EmbeddedStack
) -> None:
    job_id = await request_job(hjs, SECRET_URL.format(port=8443))
    async with httpx.AsyncClient(base_url=hook_stack.api_url, timeout=60) as api:
        view = await api.get(f"/v1/jobs/{job_id}")

    assert view.status_code == 200, view.text
    assert view.json()["webhook"]["url"] == "http://hooks.example.com:8443/…"
    assert_url_redacted(view.text)
