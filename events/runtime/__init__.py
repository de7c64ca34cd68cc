"""Hosts that run any KlipNote function unchanged.

- `function`: the contract (handlers, `Health`, `Runtime`, `Subscription` and its hooks);
- `process`: one function in one process (connection, start and stop, health, one event handled);
- `telemetry`: the one wrapper around a handler call (span, log context, metrics);
- `settlement`: ack, retry or dead letter, decided from what a handler raised;
- `jetstream`: the JetStream host (pull consumers); `http`: the HTTP host (health probes, the
  function's routes, a CloudEvents receiver for Knative Eventing); `serve`: both composed.

`events.harness` runs one handler on one event without any of them, for unit tests."""
