"""Hosts that run any KlipNote function unchanged: JetStream (pull consumers) and HTTP
(a CloudEvents receiver for Knative Eventing)."""
