"""A job's whole life after it is submitted: cancel it, delete it (`/v1/jobs/{id}/cancel`,
`DELETE /v1/jobs/{id}`)."""

from __future__ import annotations

import nats.errors
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from minio.error import S3Error

from events import storage
from events.errors import problem_body
from events.lifecycle import JobState
from events.runtime.problems import ERRORS, problem
from functions.ingest.api.dependencies import GatewayDep, authorize
from functions.ingest.gateway import JobDeleted
from functions.ingest.schema import JobView

router = APIRouter(dependencies=[Depends(authorize)], responses=ERRORS)


@router.post(
    "/v1/jobs/{job_id}/cancel",
    status_code=202,
    responses={200: {"model": JobView, "description": "The job was canceled already: unchanged."}},
)
async def cancel_job(job_id: str, gateway: GatewayDep, response: Response) -> JobView:
    """Cancel a job that has not ended: answers 202 with the job, state `canceled`, and publishes
    `transcription.canceled` (its webhook, if any, is called with it). A queued job never
    starts; a running one stops at the model's next report, after its current batch of
    BATCH_SIZE 30-s chunks (the model checks every CANCEL_CHECK_INTERVAL_S seconds), publishing
    neither `transcribed` nor `failed`; if the model
    finished first, optimize writes no results for it. The job's upload and record stay until it
    is deleted (`DELETE /v1/jobs/{id}`, or retention).

    Repeats are harmless: a job canceled already answers 200 with the job, unchanged. A job that
    ended otherwise is refused, 409 `job_finished` naming how it ended (completed, failed); no
    such job, 404 `job_not_found`."""
    record = await gateway.current_job(job_id)
    if record is None:
        raise problem(404, "job_not_found", f"no job {job_id}")
    already = record.state is JobState.CANCELED
    canceled = await gateway.cancel(record)
    if canceled is None:
        raise problem(404, "job_not_found", f"no job {job_id}")
    if canceled.state is not JobState.CANCELED:
        raise problem(
            409,
            "job_finished",
            f"job {job_id} has ended already ({canceled.state.value}): there is nothing to cancel",
        )
    if already:
        response.status_code = 200
    return await gateway.view(canceled)


@router.delete("/v1/jobs/{job_id}", status_code=204, response_class=Response)
async def delete_job(job_id: str, gateway: GatewayDep) -> Response:
    """Delete a job and its data: its upload (the media, when it is in the uploads bucket: an API
    upload or a dropped file; media in another bucket MEDIA_BUCKETS allows is left to its
    owner), its results, its record and its events. A job that has not ended is canceled
    first. Answers 204 with no body.

    Idempotent: deleting a deleted job answers 204 again (a client retrying after a lost answer
    sees success) and removes anything written for it since; an id no job ever had is 404
    `job_not_found`. From then on the job is 404 `job_not_found` on every other route, and never
    made again: no late event brings it back, and a request naming it again (the same
    `Idempotency-Key`, stored object or CloudEvent) is refused 409 `job_deleted`. The store
    unreachable: 503 `storage_unavailable`, and the record stays until a DELETE gets through."""
    try:
        existed = await gateway.delete(job_id)
    except S3Error as error:
        raise problem(503, "storage_unavailable", f"could not delete job {job_id}'s data: {error}") from error
    except nats.errors.Error:
        raise  # 503 `bus_unavailable` (events.runtime.problems); its timeouts are OSErrors too
    except storage.UNREACHABLE as error:
        raise problem(503, "storage_unavailable", f"the object store cannot be reached: {error}") from error
    if not existed:
        raise problem(404, "job_not_found", f"no job {job_id}")
    return Response(status_code=204)


async def job_deleted(request: Request, error: Exception) -> JSONResponse:
    """The answer to a request that names a deleted job again, on every way in (`Gateway.submit`
    raises `JobDeleted`): 409 `job_deleted`."""
    assert isinstance(error, JobDeleted)
    return JSONResponse(problem_body(error.code, error.message), status_code=409)
