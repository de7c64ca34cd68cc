"""The embedded stack: nats-server, SeaweedFS and the four functions as local processes."""
