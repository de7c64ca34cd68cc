"""ingest: the gateway. Every way in becomes a job; job records and results go out from here.

See README.md in this folder for what ingest consumes and produces, its settings and its image."""

# The function's name: the `function` of the events it publishes, its consumers' prefix.
NAME = "ingest"
