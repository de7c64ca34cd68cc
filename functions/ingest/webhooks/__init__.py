"""Webhooks (Standard Webhooks, https://www.standardwebhooks.com): one signed call when a job
ends, retried on a schedule.

- `guard`: the SSRF guard. Only http(s) URLs without whitespace or control characters, whose
  host is an IP literal or a valid IDNA2008 name (refused at submission, `webhook_invalid`,
  rather than failing every delivery); never an address in KlipNote's own table of the IANA
  special-purpose registries (private, loopback, link-local and cloud metadata, CGNAT,
  documentation, benchmarking, multicast, reserved; IPv6 outside 2000::/3; IPv4-mapped, NAT64 and
  6to4 forms judged by the IPv4 they carry), unless `WEBHOOK_ALLOWED_HOSTS` names the host, the
  address or its network. Checked when a request names a webhook (the gateway's admission) and
  again at every attempt after DNS resolution; the connection then goes to the address that was
  checked (no DNS rebinding between the check and the call).
- `signing`: the signer (`WEBHOOK_SECRET`, `whsec_` + base64) and the `webhook-id`, derived from
  the job and its end, so every retry carries the same one.
- `schedule`: `WEBHOOK_SCHEDULE_S` and Retry-After. Retries ride on JetStream redelivery: a failed
  attempt naks the `completed`/`failed`/`canceled` message with the next delay (or a longer
  Retry-After); each attempt is written to the job record before the message goes back, so the
  schedule survives restarts. 2xx delivers, 410 stops, every other answer (3xx and 4xx included, as
  Standard Webhooks has it) and timeouts and connection errors are failed attempts; the last one
  sends the message to the DLQ with the reason.
- `payload`: the thin body, `{"type", "timestamp", "data"}`: the job's id, state (completed,
  failed, canceled), model, language, error, presigned result links and echoed metadata.
- `delivery`: the handler of `completed` / `failed` / `canceled` that makes the attempts. One
  deadline per attempt, `WEBHOOK_TIMEOUT_S`, covers resolving the host, connecting (at most
  `WEBHOOK_CONNECT_TIMEOUT_S`), TLS, sending and reading the answer. The JetStream host runs
  `WEBHOOK_CONCURRENCY` deliveries at once; of those at most `WEBHOOK_HOST_CONCURRENCY` go to one
  host: a job beyond it waits (redelivered after half a deadline, no attempt counted) while other
  hosts' jobs go ahead, so a slow or black-holed host delays only its own jobs.

What records, logs, answers and dead letters show of a webhook URL is `scheme://host[:port]` and
`/…` for any path (`functions.ingest.schema.shown_url`): receivers keep tokens in the
user:password, the path and the query. Header values never reach logs, events, job records or
spans (a `webhook` span per attempt carries the job, the attempt number and the status code).
Every module here logs as `functions.ingest.webhooks`.
"""
