"""A worker's own Prometheus metrics (issue 21): its finished runs by outcome, their claim-to-
report time and its push state, as its health port serves them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from jobsys.models import JobStatus
from jobsys.system import JobSystem
from jobsys_cli.health_port import health_app
from tests.support.waiting import wait_until
from tests.worker.conftest import StartWorker


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


async def test_finished_runs_are_counted_by_outcome_with_their_time(jobs: JobSystem, start_worker: StartWorker) -> None:
    import httpx

    worker = await start_worker("pc-m", devices=3, speed=50.0)
    created = await jobs.create_job(target_url="https://example.com/m", duration_sec=1)

    async def done() -> bool:
        return (await jobs.get_job(created.job.id)).status is JobStatus.COMPLETED

    await wait_until(done, what="the job completed")
    await wait_until(lambda: samples(worker.metrics.exposition()).get(
        ("jobsys_worker_run_seconds_count", ())) == 3, what="three runs counted")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(health_app(worker.readiness, worker.metrics.exposition)),
                                 base_url="http://health.test") as client:
        served = samples((await client.get("/metrics")).content)
    assert served[("jobsys_worker_runs_total", (("outcome", "completed"),))] == 3
    assert served[("jobsys_worker_run_seconds_count", ())] == 3
    assert served[("jobsys_worker_push", ())] == 1
