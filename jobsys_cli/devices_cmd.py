"""`jobsys devices list`: the devices, grouped by the worker that hosts them, with status."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from jobsys.models import Device
from jobsys.system import JobSystem
from jobsys_cli.operator import EXIT_OK, print_json, run_with_jobs, table
from jobsys_cli.options import add_database_options

NO_WORKER = "(no worker)"


def _seen(device: Device, now: dt.datetime) -> str:
    seconds = max(0, int((now - device.last_heartbeat_at).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def devices_text(devices: list[Device], summary: dict[str, Any]) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    groups: dict[str, list[Device]] = {}
    for device in sorted(devices, key=lambda d: (d.worker_name or "~", d.serial)):
        groups.setdefault(device.worker_name or NO_WORKER, []).append(device)
    blocks = []
    for worker, members in groups.items():
        simulated = sum(d.simulated for d in members)
        head = f"{worker}: {len(members)} devices" + (f" ({simulated} simulated)" if simulated else "")
        rows = [[d.serial, d.status.value, d.state, d.model or "-",
                 str(d.current_job_id)[:8] if d.current_job_id else "-", _seen(d, now)] for d in members]
        blocks.append(head + "\n" + table(["  SERIAL", "STATUS", "STATE", "MODEL", "JOB", "SEEN"],
                                          [["  " + row[0], *row[1:]] for row in rows]))
    total = summary.pop("total", len(devices))
    counts = ", ".join(f"{value} {key}" for key, value in summary.items())
    return "\n\n".join([*blocks, f"{total} devices: {counts}"]) if blocks else f"no devices ({counts})"


def cmd_devices_list(args: argparse.Namespace) -> int:
    async def body(jobs: JobSystem) -> int:
        listed = await jobs.list_devices()
        if args.json:
            print_json(listed.model_dump(mode="json"))
        else:
            print(devices_text(listed.devices, listed.summary.model_dump(mode="json")))
        return EXIT_OK

    return run_with_jobs(args, body)


def add_parser(subparsers: Any) -> None:
    devices = subparsers.add_parser("devices", help="list devices by worker")
    sub = devices.add_subparsers(dest="devices_command", required=True)
    listing = sub.add_parser("list", help="devices grouped by worker, with status and current job")
    listing.add_argument("--json", action="store_true", help="print JSON (one document) instead of text")
    add_database_options(listing)
    listing.set_defaults(handler=cmd_devices_list)
