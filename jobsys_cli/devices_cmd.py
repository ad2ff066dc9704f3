"""`jobsys devices ...`: list the devices a page at a time, grouped by the worker that hosts
them, with their status and why they take no work; show one with its history; and what
operators decide about a device: disable, enable, drain, label, reboot. A device is named by
its serial or its id. No command reads the whole fleet: a fleet may hold 10,000 phones."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import uuid
from typing import Any, Awaitable, Callable

import pydantic

from jobsys import errors
from jobsys.models import Device, DeviceDetail, DeviceFilter, DeviceFilterState, DevicePage, DeviceSummary
from jobsys.system import JobSystem
from jobsys_cli.jobs_cmd import label_pairs
from jobsys_cli.operator import EXIT_OK, BadInput, error_exit, print_json, run_with_jobs, table
from jobsys_cli.options import add_database_options

NO_WORKER = "(no worker)"
PAGE_MAX = 1000  # list_devices_page's largest page
PAGE_DEFAULT = 100
SEARCH_MAX = 200  # DeviceFilter.q
SERIAL_PAGE = 100  # devices per read while looking for one serial among those containing it


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


async def _device_by_id(jobs: JobSystem, text: str) -> Device | None:
    try:
        device_id = uuid.UUID(text.strip())
    except ValueError:
        return None
    try:
        return await jobs.get_device(device_id)
    except errors.NotFound:
        return None


async def _device_by_serial(jobs: JobSystem, serial: str) -> Device | None:
    """The device with exactly this serial (unique: devices.serial). The search matches
    substrings ("a1" finds "a10"), so page through those until the exact one: few for a real
    serial, never the fleet unless every serial contains the text."""
    try:
        narrowed = DeviceFilter(q=serial)
    except pydantic.ValidationError:  # longer than any serial may be
        return None
    after: str | None = None
    while serial:
        page = await jobs.list_devices_page(narrowed, after=after, limit=SERIAL_PAGE, with_counts=False)
        match = next((device for device in page.devices if device.serial == serial), None)
        if match is not None or page.next_cursor is None:
            return match
        after = page.next_cursor
    return None


async def resolve_device(jobs: JobSystem, text: str) -> Device:
    """The device with this serial or id (NotFound otherwise). A serial is any text, so a UUID
    may be one device's id and another's serial: refused rather than guessed, since the
    command may disable or reboot it."""
    by_id, by_serial = await _device_by_id(jobs, text), await _device_by_serial(jobs, text)
    if by_id is not None and by_serial is not None and by_id.id != by_serial.id:
        raise BadInput(f"{text} is both the id of device {by_id.serial} and the serial of device "
                       f"{by_serial.id}; give the serial {by_id.serial} or the id {by_serial.id}")
    device = by_id or by_serial
    if device is None:
        raise errors.NotFound(f"no device with serial or id {text}", {"device": text[:200]})
    return device


def _counts(summary: DeviceSummary) -> str:
    counts = summary.model_dump(mode="json", exclude={"total"})
    return ", ".join(f"{value} {key}" for key, value in counts.items() if value or key == "connected")


def _worker_blocks(devices: list[Device], whole: bool) -> list[str]:
    """One table per worker (its name, then no worker last), serials in order. `whole`: the
    page holds every matching device, so a worker's count is all of its devices here."""
    now = dt.datetime.now(dt.timezone.utc)
    groups: dict[str, list[Device]] = {}
    for device in sorted(devices, key=lambda d: (d.worker_name or "~", d.serial)):
        groups.setdefault(device.worker_name or NO_WORKER, []).append(device)
    blocks = []
    for worker, members in groups.items():
        simulated = sum(d.simulated for d in members)
        head = (f"{worker}: {len(members)} devices" + ("" if whole else " on this page")
                + (f" ({simulated} simulated)" if simulated else ""))
        rows = [[d.serial, d.status.value, d.model or "-", _battery(d),
                 str(d.current_job_id)[:8] if d.current_job_id else "-", _seen(d, now), d.state_reason or ""]
                for d in members]
        blocks.append(head + "\n" + table(["  SERIAL", "STATUS", "MODEL", "BATTERY", "JOB", "SEEN", "WHY"],
                                          [["  " + row[0], *row[1:]] for row in rows]))
    return blocks


def devices_text(page: DevicePage, after: str | None = None) -> str:
    """The page's devices by worker, then the fleet's counts; when the page is not the whole
    fleet, how many of the matching it shows, and the option that gives the next page."""
    summary = page.summary
    assert summary is not None  # listed with counts
    fleet = f"{summary.total} devices: {_counts(summary)}"
    if not page.devices:
        if page.total:  # asked for the page after the last
            return f"no devices after {after} ({page.total} matching; {fleet})"
        return f"no devices match ({fleet})" if summary.total else f"no devices ({_counts(summary)})"
    lines = [fleet]
    whole = len(page.devices) == page.total
    if len(page.devices) != summary.total:
        lines.insert(0, f"showing {len(page.devices)} of {page.total} matching")
    if page.next_cursor is not None:  # "=": a serial may start with "-"
        lines.append(f"more: --after={shlex.quote(page.next_cursor)} (with the same filters)")
    return "\n\n".join([*_worker_blocks(page.devices, whole), "\n".join(lines)])


def list_filter(args: argparse.Namespace) -> DeviceFilter:
    """The filter the flags ask for, checked before anything is sent (BadInput)."""
    states = [s.value for s in DeviceFilterState]
    if args.status is not None and args.status not in states:
        raise BadInput(f"status must be one of {', '.join(states)}")
    if not 1 <= args.limit <= PAGE_MAX:
        raise BadInput(f"limit must be 1..{PAGE_MAX}")
    if args.search is not None and len(args.search) > SEARCH_MAX:
        raise BadInput(f"--search must be at most {SEARCH_MAX} characters")
    return DeviceFilter(state=args.status, labels=label_pairs(args.labels), q=args.search)


def cmd_devices_list(args: argparse.Namespace) -> int:
    try:
        narrowed = list_filter(args)
    except (BadInput, pydantic.ValidationError) as exc:  # one line, exit 2
        return error_exit(exc)

    async def body(jobs: JobSystem) -> int:
        page = await jobs.list_devices_page(narrowed, pc=args.pc, after=args.after, limit=args.limit)
        print_json(page.model_dump(mode="json")) if args.json else print(devices_text(page, args.after))
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
    listing = sub.add_parser("list", help="a page of devices (by serial) grouped by worker, with status, "
                                          "battery and current job")
    listing.add_argument("--status", default=None, metavar="STATE",
                         help=", ".join(s.value for s in DeviceFilterState))
    listing.add_argument("--pc", default=None, metavar="NAME", help="only the devices of the worker so named")
    listing.add_argument("--label", dest="labels", action="append", default=[], metavar="KEY=VALUE",
                         help="only devices carrying this label (repeatable: every one)")
    listing.add_argument("--search", default=None, metavar="TEXT", help="only serials containing TEXT")
    listing.add_argument("--limit", type=int, default=PAGE_DEFAULT,
                         help=f"at most this many (1..{PAGE_MAX}, default {PAGE_DEFAULT})")
    listing.add_argument("--after", default=None, metavar="CURSOR", help="the page after this cursor")
    listing.add_argument("--json", action="store_true", help="print the page as JSON, with cursor and counts")
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
