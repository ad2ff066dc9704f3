"""`jobsys batch-runner --health-port` (issue 21): a supervisor sees the runner ready, and its
own Prometheus metrics count the provider calls of a batch it ran."""

from __future__ import annotations

import signal
import subprocess

import httpx
from prometheus_client.parser import text_string_to_metric_families

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus
from jobsys.system import JobSystem
from tests.support.processes import JOBSYS, free_port, get_json, kill_all
from tests.support.waiting import wait_until


def calls(text: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "jobsys_runner_provider_calls_total" and s.labels.get("outcome") == "ok")


async def test_readyz_and_metrics_of_a_runner_process(db_url: str, jobs: JobSystem) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    runner = subprocess.Popen([*JOBSYS, "batch-runner", "--database-url", db_url, "--provider", "offline",
                               "--offline-latency", "0", "--health-port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        await wait_until(lambda: (get_json(base + "/readyz") or (0, {}))[0] == 200, timeout_s=60, what="ready")
        _, body = get_json(base + "/readyz") or (0, {})
        assert body["checks"] == {"started": "ok", "database": "ok", "push": "ok", "auth": "ok"}
        batch = BatchJobs.of(jobs)
        created = await batch.create_job(template="Summarise: {text}", items=[{"text": "a"}, {"text": "b"}])

        async def done() -> bool:
            return (await batch.get_job(created.id)).status is BatchStatus.COMPLETED

        await wait_until(done, timeout_s=60, what="the batch completed")
        assert calls(httpx.get(base + "/metrics").text) == 2
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=60) == 0
    finally:
        kill_all([runner])
