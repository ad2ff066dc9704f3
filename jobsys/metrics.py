"""Prometheus metrics, through prometheus-client. Two kinds, each where it is exact:

- the fleet as the database has it (`jobsys.metrics_snapshot()`: jobs, runs, devices by
  status and PC, battery and temperature, workers' push state, AI batches), gauges built
  per scrape by the dashboard's `GET /metrics`;
- what a process sees happen (a worker's finished runs and their claim-to-report time, the
  hub's sockets), counters and histograms kept in that process's own registry and served on
  its health port or with the dashboard's.

Label sets are bounded: statuses, PC names and, up to the `metrics_device_series` setting,
device serials; never job or run ids.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "RunnerMetrics", "WorkerMetrics", "exposition", "snapshot_families"]

# claim -> report of one run: from a quick failure to runs of many minutes
RUN_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def _by_status(name: str, help_text: str, counts: dict[str, Any]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["status"])
    for status, n in sorted(counts.items()):
        family.add_metric([status], float(n))
    return family


def snapshot_families(snapshot: dict[str, Any]) -> list[Metric]:
    """The gauges of one metrics_snapshot()."""
    devices = GaugeMetricFamily("jobsys_devices", "Devices by dashboard status and PC", labels=["pc", "status"])
    for row in snapshot.get("devices", []):
        devices.add_metric([row["pc"], row["status"]], float(row["n"]))
    battery = GaugeMetricFamily("jobsys_device_battery_percent", "Battery level as the worker last read it",
                                labels=["serial", "pc"])
    temperature = GaugeMetricFamily("jobsys_device_temperature_celsius",
                                    "Battery temperature as the worker last read it", labels=["serial", "pc"])
    for row in snapshot.get("vitals", []):
        if row.get("battery_pct") is not None:
            battery.add_metric([row["serial"], row["pc"]], float(row["battery_pct"]))
        if row.get("temperature_c") is not None:
            temperature.add_metric([row["serial"], row["pc"]], float(row["temperature_c"]))
    push = GaugeMetricFamily("jobsys_worker_push_connected",
                             "1 when a live worker session's push channel is up, 0 while it polls", labels=["worker"])
    for row in snapshot.get("workers", []):
        push.add_metric([row["name"]], 1.0 if row.get("push") == "connected" else 0.0)
    return [
        _by_status("jobsys_jobs", "Device jobs by status", snapshot.get("jobs", {})),
        _by_status("jobsys_runs", "Device runs by status (queued = pending or paused), from the jobs' exact counters",
                   snapshot.get("runs", {})),
        devices, battery, temperature, push,
        _by_status("jobsys_background_jobs", "AI batch jobs by status", snapshot.get("background_jobs", {})),
        _by_status("jobsys_background_items", "AI batch items by status", snapshot.get("background_items", {})),
    ]


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def exposition(families: Iterable[Metric], *registries: CollectorRegistry) -> bytes:
    """The text exposition of these families followed by the registries' own metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry) + b"".join(generate_latest(r) for r in registries)


class WorkerMetrics:
    """A worker's own counters, in a registry of its own (one per worker: tests run many)."""

    def __init__(self, push_connected: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter("jobsys_worker_runs", "Runs this worker finished, by outcome",
                            labelnames=["outcome"], registry=self.registry)
        self.run_seconds = Histogram("jobsys_worker_run_seconds", "Claim to report of each run this worker finished",
                                     buckets=RUN_SECONDS_BUCKETS, registry=self.registry)
        self.heartbeat_failures = Counter("jobsys_worker_heartbeat_failures",
                                          "Heartbeats that did not reach the database", registry=self.registry)
        self.registry.register(_PushGauge(push_connected))

    def finished(self, outcome: str, seconds: float) -> None:
        self.runs.labels(outcome=outcome).inc()
        self.run_seconds.observe(max(seconds, 0.0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RunnerMetrics:
    """An AI batch runner's own counters: provider calls by outcome, 429 cooldowns, and the
    time calls waited for the rate limiter (labels: provider name and outcome only)."""

    def __init__(self, push_connected: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter("jobsys_runner_provider_calls", "Provider calls, by provider and outcome "
                             "(ok, rate_limited, transient, permanent, fatal, invalid_output)",
                             labelnames=["provider", "outcome"], registry=self.registry)
        self.cooldowns = Counter("jobsys_runner_cooldowns", "429 cooldowns that held every call of a limiter",
                                 labelnames=["provider"], registry=self.registry)
        self.limiter_wait = Histogram("jobsys_runner_limiter_wait_seconds",
                                      "How long each call waited for the rate limiter (RPM, TPM, cooldown)",
                                      buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120), registry=self.registry)
        self.registry.register(_PushGauge(push_connected, "jobsys_runner_push"))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _PushGauge(Collector):
    def __init__(self, connected: Callable[[], bool], name: str = "jobsys_worker_push") -> None:
        self._connected = connected
        self._name = name

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(self._name, "1 while this process's push channel is up, 0 while it polls")
        gauge.add_metric([], 1.0 if self._connected() else 0.0)
        return [gauge]
