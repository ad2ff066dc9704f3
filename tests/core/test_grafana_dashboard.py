"""The Grafana dashboard in docs/ reads only metrics jobsys exports (issue 21): every series
its queries name is one /metrics or a worker's health port gives."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from jobsys import metrics
from tests.support.paths import ROOT

SNAPSHOT = {"jobs": {"active": 1}, "runs": {"queued": 1}, "devices": [{"pc": "pc", "status": "idle", "n": 1}],
            "vitals": [{"serial": "s", "pc": "pc", "battery_pct": 50, "temperature_c": 30.0}],
            "workers": [{"name": "pc", "push": "connected"}], "background_jobs": {"running": 1},
            "background_items": {"pending": 1}}


def exported_names() -> set[str]:
    worker = metrics.WorkerMetrics(lambda: True)
    worker.finished("completed", 1.0)
    worker.heartbeat_failures.inc()
    runner = metrics.RunnerMetrics(lambda: True)
    runner.calls.labels(provider="gemini", outcome="ok").inc()
    runner.cooldowns.labels(provider="gemini").inc()
    runner.limiter_wait.observe(1.0)
    text = metrics.exposition(metrics.snapshot_families(SNAPSHOT)) + worker.exposition() + runner.exposition()
    names = {s.name for family in text_string_to_metric_families(text.decode()) for s in family.samples}
    return names | {"jobsys_hub_websockets"}  # the dashboard's own gauge (nicegui_app.api.metrics)


def test_every_query_names_an_exported_series() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-jobsys.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"jobsys_[a-z_]+", target["expr"])}
    assert len(dashboard["panels"]) >= 10 and queried
    assert queried - exported_names() == set()
