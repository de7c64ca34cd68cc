"""ingest: the gateway. Every way in becomes a job; job records and results go out from here."""
