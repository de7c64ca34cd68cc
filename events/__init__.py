"""KlipNote's event contract (catalogue, data models, CloudEvents NATS binding) and the runtime
that hosts every function on JetStream or HTTP."""
