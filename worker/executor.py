"""Runs one claimed assignment on its device: start, act, (store evidence,) report.

Stop requests (job cancelled or deleted, worker shutting down) are read through a
StopCheck the driver calls about once a second.

Evidence: the driver writes the screenshot to the local evidence dir. When the JobSystem
has an evidence store (Supabase mode: Storage, `JobSystem.evidence_store()`) it is then
uploaded and the result names the stored object; a failed upload costs the run nothing:
it is reported with the local path and the reason."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import uuid
from typing import Any

from jobsys import errors
from jobsys.models import ClaimedAssignment
from jobsys.system import EvidenceUploader, JobSystem
from worker.drivers.base import DeviceDriver, DeviceError, OpenUrlRequest, StopCheck, StopReason, safe_file_stem
from worker.fleet import Fleet
from worker.reporter import Outcome, Reporter

log = logging.getLogger("jobsys.worker.executor")

START_RETRIES = 5
START_RETRY_S = 0.5


async def _store_evidence(result: dict[str, Any], run: ClaimedAssignment, store: EvidenceUploader | None,
                          worker_id: uuid.UUID | None, fields: str) -> dict[str, Any]:
    local = result.get("evidence_path")
    if store is None or worker_id is None or not local:
        return result
    try:
        uri = await store.upload(worker_id, run.assignment_id, run.attempt, pathlib.Path(str(local)))
    except Exception as exc:  # whatever went wrong, the run itself is done and must be reported
        reason = exc.message if isinstance(exc, errors.JobsysError) else f"{type(exc).__name__}: {exc}"
        log.warning("evidence_not_uploaded %s error=%r", fields, reason)
        return {**result, "evidence_error": f"upload failed ({reason}); "
                                            "the file stays on the worker PC at evidence_path"}
    return {**result, "evidence_path": uri}


async def _start(jobs: JobSystem, run: ClaimedAssignment) -> bool:
    """Tell the server the device began. False if the run is no longer ours."""
    for attempt in range(START_RETRIES):
        try:
            await jobs.start_assignment(run.assignment_id, run.attempt)
            return True
        except (errors.StaleRun, errors.NotFound):
            return False
        except errors.TransportError:
            if attempt == START_RETRIES - 1:
                raise
            await asyncio.sleep(START_RETRY_S)  # retry pacing, not synchronisation
    return False


async def execute(
    run: ClaimedAssignment, *, jobs: JobSystem, driver: DeviceDriver, fleet: Fleet, reporter: Reporter,
    should_stop: StopCheck, evidence_dir: pathlib.Path,
    evidence_store: EvidenceUploader | None = None, worker_id: uuid.UUID | None = None,
) -> str:
    """Run it and hand its outcome to the reporter; returns what happened, for the metrics:
    completed, failed, released, stopped (the server ended it) or not_started."""
    fields = f"run={run.assignment_id} attempt={run.attempt} job={run.job_id} device={run.serial}"
    try:
        if not run.started and not await _start(jobs, run):
            log.info("run_gone %s", fields)
            return "not_started"
    except errors.TransportError:
        # The claim lease expires on the server and the run is re-queued; nothing is lost.
        log.warning("run_not_started %s reason=database-unavailable", fields)
        return "not_started"
    log.info("run_started %s url=%s duration_sec=%s", fields, run.target_url, run.duration_sec)
    request = OpenUrlRequest(serial=run.serial, url=run.target_url, duration_sec=float(run.duration_sec),
                             evidence_dir=evidence_dir / str(run.job_id),
                             evidence_name=safe_file_stem(f"{run.serial}-{run.assignment_id}-{run.attempt}"))
    try:
        result = await driver.open_url(request, should_stop)
    except asyncio.CancelledError:
        # Shutdown gave up on a run stuck on a phone that does not answer: hand it back now
        # rather than let its lease lapse.
        log.info("run_released %s reason=shutdown-abandoned", fields)
        reporter.submit(Outcome(run.assignment_id, run.attempt, "release", error="worker shut down"))
        raise
    except DeviceError as exc:
        fleet.mark_error(run.serial, str(exc))
        log.warning("run_failed %s error=%r", fields, str(exc))
        reporter.submit(Outcome(run.assignment_id, run.attempt, "fail", error=str(exc),
                                result={"simulated": driver.simulated}))
        return "failed"
    if result.stopped is StopReason.CANCELLED:
        log.info("run_stopped %s reason=cancelled", fields)  # the server already cancelled it
        return "stopped"
    if result.stopped is StopReason.SHUTDOWN:
        log.info("run_released %s reason=shutdown", fields)
        reporter.submit(Outcome(run.assignment_id, run.attempt, "release", error="worker shut down"))
        return "released"
    reported = await _store_evidence(result.as_json(), run, evidence_store, worker_id, fields)
    log.info("run_completed %s elapsed_sec=%.1f", fields, result.elapsed_sec)
    reporter.submit(Outcome(run.assignment_id, run.attempt, "complete", result=reported))
    return "completed"
