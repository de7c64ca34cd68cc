"""Webhooks (Standard Webhooks, https://www.standardwebhooks.com): one signed call when a job
ends, retried on a schedule.

- `guard`: the SSRF guard. Only http(s), and never an address that is private, loopback,
  link-local (cloud metadata), multicast, reserved or unspecified, unless `WEBHOOK_ALLOWED_HOSTS`
  names the host, the address or its network. Checked when a request names a webhook (the
  gateway's admission) and again at every attempt after DNS resolution; the connection then goes
  to the address that was checked (no DNS rebinding between the check and the call).
- `signing`: the signer (`WEBHOOK_SECRET`, `whsec_` + base64) and the `webhook-id`, derived from
  the job and its end, so every retry carries the same one.
- `schedule`: `WEBHOOK_SCHEDULE_S` and Retry-After. Retries ride on JetStream redelivery: a failed
  attempt naks the `completed`/`failed` message with the next delay (or a longer Retry-After);
  each attempt is written to the job record before the message goes back, so the schedule
  survives restarts. 2xx delivers, 410 stops, every other answer (3xx and 4xx included, as
  Standard Webhooks has it) and timeouts and connection errors are failed attempts; the last one
  sends the message to the DLQ with the reason.
- `payload`: the thin body, `{"type", "timestamp", "data"}`: the job's id, state, model,
  language, error, presigned result links and echoed metadata.
- `delivery`: the handler of `completed` / `failed` that makes the attempts.

Header values and the URL's query string never reach logs, events, job records or spans (a
`webhook` span per attempt carries the job, the attempt number and the status code). Every module
here logs as `functions.ingest.webhooks`.
"""
