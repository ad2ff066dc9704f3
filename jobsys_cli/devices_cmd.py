"""`jobsys devices ...`: list the devices, grouped by the worker that hosts them, with their
status and why they take no work; show one with its history; and what operators decide
about a device: disable, enable, drain, label, reboot. A device is named by its serial or
its id."""

from __future__ import annotations

import argparse
import datetime as dt
import uuid
from typing import Any, Awaitable, Callable

from jobsys import errors
from jobsys.models import Device, DeviceDetail
from jobsys.system import JobSystem
from jobsys_cli.jobs_cmd import label_pairs
from jobsys_cli.operator import EXIT_OK, error_exit, print_json, run_with_jobs, table
from jobsys_cli.options import add_database_options

NO_WORKER = "(no worker)"


def _seen(device: Device, now: dt.datetime) -> str:
    seconds = max(0, int((now - device.last_heartbeat_at).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _battery(device: Device) -> str:
    vitals = device.vitals
    if vitals is None or vitals.battery_pct is None:
        return "-"
    text = f"{vitals.battery_pct}%" + ("+" if vitals.charging else "")
    return text + (f" {vitals.temperature_c:.0f}°C" if vitals.temperature_c is not None else "")


def _labels(labels: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def device_text(device: DeviceDetail) -> str:
    lines = [f"{device.serial} ({device.id})",
             f"  status:   {device.status.value}" + (f": {device.state_reason}" if device.state_reason else ""),
             f"  worker:   {device.worker_name or NO_WORKER}",
             f"  battery:  {_battery(device)}",
             f"  labels:   {_labels(device.labels)}",
             f"  operator: {_labels(device.operator_labels)}"]
    if device.events:
        lines.append("  events:")
        lines += [f"    {e.at:%Y-%m-%d %H:%M:%S} {e.event} {e.state}" + (f": {e.detail}" if e.detail else "")
                  for e in device.events[:10]]
    if device.runs:
        lines.append("  runs:")
        lines += [f"    {r.id} {r.status.value} attempt {r.attempt} {r.job_title}" + (f": {r.error}" if r.error else "")
                  for r in device.runs[:10]]
    return "\n".join(lines)


async def resolve_device(jobs: JobSystem, text: str) -> Device:
    """The device with this serial or id (NotFound otherwise)."""
    listed = (await jobs.list_devices()).devices
    for device in listed:
        if device.serial == text or str(device.id) == text.strip().lower():
            return device
    raise errors.NotFound(f"no device with serial or id {text}", {"device": text[:200]})


def devices_text(devices: list[Device], summary: dict[str, Any]) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    groups: dict[str, list[Device]] = {}
    for device in sorted(devices, key=lambda d: (d.worker_name or "~", d.serial)):
        groups.setdefault(device.worker_name or NO_WORKER, []).append(device)
    blocks = []
    for worker, members in groups.items():
        simulated = sum(d.simulated for d in members)
        head = f"{worker}: {len(members)} devices" + (f" ({simulated} simulated)" if simulated else "")
        rows = [[d.serial, d.status.value, d.model or "-", _battery(d),
                 str(d.current_job_id)[:8] if d.current_job_id else "-", _seen(d, now), d.state_reason or ""]
                for d in members]
        blocks.append(head + "\n" + table(["  SERIAL", "STATUS", "MODEL", "BATTERY", "JOB", "SEEN", "WHY"],
                                          [["  " + row[0], *row[1:]] for row in rows]))
    total = summary.pop("total", len(devices))
    counts = ", ".join(f"{value} {key}" for key, value in summary.items() if value or key == "connected")
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


def cmd_devices_show(args: argparse.Namespace) -> int:
    async def body(jobs: JobSystem) -> int:
        device = await jobs.get_device((await resolve_device(jobs, args.device)).id)
        print_json(device.model_dump(mode="json")) if args.json else print(device_text(device))
        return EXIT_OK

    return run_with_jobs(args, body)


def _device_command(act: Callable[[JobSystem, uuid.UUID, argparse.Namespace], Awaitable[Device]],
                    done: str) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        async def body(jobs: JobSystem) -> int:
            device = await act(jobs, (await resolve_device(jobs, args.device)).id, args)
            if args.json:
                print_json(device.model_dump(mode="json"))
            else:
                print(f"{device.serial}: {done}, now {device.status.value}"
                      + (f" ({device.state_reason})" if device.state_reason else ""))
            return EXIT_OK

        return run_with_jobs(args, body)

    return cmd


def cmd_devices_label(args: argparse.Namespace) -> int:
    try:
        args.labels = label_pairs(args.pairs)
    except Exception as exc:  # noqa: BLE001 - BadInput: one line, exit 2
        return error_exit(exc)
    return _device_command(lambda jobs, device, a: jobs.set_device_labels(device, a.labels), "labels set")(args)


def add_parser(subparsers: Any) -> None:
    devices = subparsers.add_parser("devices", help="list devices; disable, enable, drain, label, reboot one")
    sub = devices.add_subparsers(dest="devices_command", required=True)
    listing = sub.add_parser("list", help="devices grouped by worker, with status, battery and current job")
    listing.add_argument("--json", action="store_true", help="print JSON (one document) instead of text")
    add_database_options(listing)
    listing.set_defaults(handler=cmd_devices_list)

    def device_parser(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=text)
        parser.add_argument("device", metavar="DEVICE", help="its serial or id")
        parser.add_argument("--json", action="store_true", help="print the device as JSON")
        add_database_options(parser)
        return parser

    device_parser("show", "one device: status and why, battery, labels, its last events and runs").set_defaults(
        handler=cmd_devices_show)
    for name, state, text, done in (
            ("disable", "disabled", "take it out of work now: its running run goes back to the queue", "disabled"),
            ("drain", "draining", "take no new runs; its running run finishes, then it is disabled", "draining"),
            ("enable", "enabled", "put it back into work (also ends a quarantine)", "enabled")):
        device_parser(name, text).set_defaults(handler=_device_command(
            lambda jobs, device, a, state=state: jobs.set_device_state(device, state), done))
    device_parser("reboot", "ask its worker to reboot the phone (refused while it runs a run)").set_defaults(
        handler=_device_command(lambda jobs, device, a: jobs.request_device_reboot(device), "reboot asked"))
    label = device_parser("label", "set the operator's labels (replacing them; none given: clear them)")
    label.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    label.set_defaults(handler=cmd_devices_label)
