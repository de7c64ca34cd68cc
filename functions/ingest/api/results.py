"""`/v1/jobs/{job_id}/transcript.{fmt}`: a completed job's result, named after its media."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from minio.error import S3Error

from events.lifecycle import JobState
from events.models import MEDIA_TYPES, OutputFormat
from events.runtime.problems import ERRORS, problem
from functions.ingest.api.dependencies import GatewayDep, authorize
from functions.ingest.naming import content_disposition, result_filename

router = APIRouter(dependencies=[Depends(authorize)], responses=ERRORS)


@router.get("/v1/jobs/{job_id}/transcript.{fmt}")
async def get_transcript(job_id: str, fmt: OutputFormat, gateway: GatewayDep) -> StreamingResponse:
    record = await gateway.current_job(job_id)
    if record is None:
        raise problem(404, "job_not_found", f"no job {job_id}")
    if record.state != JobState.COMPLETED:
        raise problem(409, "job_not_completed", f"job is {record.state.value}")
    ref = record.results.get(fmt)
    if ref is None:
        raise problem(404, "format_not_produced", f"{fmt} was not requested for this job")
    try:
        response = await asyncio.to_thread(gateway.store.get_object, ref.bucket, ref.key)
    except S3Error as error:
        raise problem(404, "result_missing", str(error)) from error
    disposition = content_disposition(result_filename(record.filename, record.id, fmt))
    return StreamingResponse(
        _chunks(response), media_type=MEDIA_TYPES[fmt], headers={"Content-Disposition": disposition}
    )


def _chunks(response: Any) -> Iterator[bytes]:
    """The body of a minio GET response in 64 KiB chunks, the connection released afterwards."""
    try:
        yield from response.stream(64 * 1024)
    finally:
        response.close()
        response.release_conn()
