"""Stand-ins for ingest's job store, for tests of the router in process."""

from __future__ import annotations

from functions.ingest.schema import JobRecord


class StandInRecords:
    """Stands in for the job store's reads (`CurrentJobs`): records in a dict."""

    def __init__(self, *records: JobRecord) -> None:
        self.records = {record.id: record for record in records}

    async def current(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)

    async def deleted(self, job_id: str) -> bool:
        return False  # no job here is deleted (test_delete_retention.py deletes them)
