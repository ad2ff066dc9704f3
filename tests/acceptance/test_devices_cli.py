"""`jobsys devices list|show|disable|drain|enable|label|reboot` and `jobs create --label`
(issues 19, 20): the real command in a subprocess, against a migrated database with registered
workers; a page of devices at a time, and one device found without reading the fleet."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobsys.system import JobSystem
from jobsys_cli import devices_cmd
from tests.acceptance.test_jobs_cli import jobsys, refused_in_one_line
from tests.support.postgres import Db


def register(db: Db, worker: str = "pc1", devices: list[dict[str, Any]] | None = None) -> None:
    db.run("select jobsys.register_worker(%s, 'h', %s::jsonb)", (worker, json.dumps(devices or [
        {"serial": "a1", "labels": {"model": "Pixel"}}, {"serial": "a2"}, {"serial": "b1"}]),))


def register_two_pcs(db: Db) -> None:
    """pc1: a1 (Pixel), a2, b1; pc2: c1, c2."""
    register(db)
    register(db, "pc2", [{"serial": "c1"}, {"serial": "c2"}])


def listed_serials(db_url: str, *options: str) -> list[str]:
    listed = jobsys(db_url, "devices", "list", "--json", *options)
    assert listed.returncode == 0, listed.stderr
    return [device["serial"] for device in json.loads(listed.stdout)["devices"]]


def device_id(db: Db, serial: str) -> str:
    return str(db.value("select id from jobsys.devices where serial = %s", (serial,)))


def test_operators_label_disable_drain_enable_and_reboot_by_serial(db: Db, db_url: str) -> None:
    register(db)
    labelled = jobsys(db_url, "devices", "label", "a1", "rack=A")
    assert labelled.returncode == 0 and labelled.stdout.startswith("a1: labels set, now idle"), labelled.stderr
    jobsys(db_url, "devices", "label", "a2", "rack=A")
    created = jobsys(db_url, "jobs", "create", "--url", "https://example.com/", "--duration", "5", "--all",
                     "--label", "rack=A", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["job"]["target_count"] == 2
    disabled = jobsys(db_url, "devices", "disable", "a1")
    assert disabled.stdout.strip() == "a1: disabled, now disabled (disabled by an operator)"
    shown = jobsys(db_url, "devices", "show", "a1")
    assert "status:   disabled: disabled by an operator" in shown.stdout
    assert "labels:   model=Pixel" in shown.stdout and "operator: rack=A" in shown.stdout
    assert jobsys(db_url, "devices", "enable", "a1").stdout.strip() == "a1: enabled, now idle"
    drained = jobsys(db_url, "devices", "drain", "b1", "--json")
    assert json.loads(drained.stdout)["status"] == "disabled"
    assert jobsys(db_url, "devices", "reboot", "a2").stdout.strip() == "a2: reboot asked, now idle"
    assert db.value("select reboot_requested_at is not null from jobsys.devices where serial = 'a2'")
    listed = jobsys(db_url, "devices", "list").stdout
    assert "drained: disabled by an operator" in listed  # why b1 takes no work
    assert listed.strip().endswith("3 devices: 2 connected, 2 idle, 1 disabled")


def test_bad_labels_and_unknown_devices_are_refused_in_one_line(db: Db, db_url: str) -> None:
    register(db)
    before = db.dump()
    assert "key=value" in refused_in_one_line(jobsys(db_url, "devices", "label", "a1", "rack"), 2)
    assert "reported by the device's worker" in refused_in_one_line(
        jobsys(db_url, "devices", "label", "a1", "model=X"), 2)
    assert "no device" in refused_in_one_line(jobsys(db_url, "devices", "disable", "nope"), 1)
    assert "key=value" in refused_in_one_line(jobsys(
        db_url, "jobs", "create", "--url", "https://example.com/", "--duration", "5", "--all", "--label", "x"), 2)
    assert db.dump() == before


def test_list_reads_a_page_and_says_how_to_get_the_next(db: Db, db_url: str) -> None:
    register_two_pcs(db)
    first = jobsys(db_url, "devices", "list", "--limit", "2")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert lines[-3:] == ["showing 2 of 5 matching", "5 devices: 5 connected, 5 idle",
                          "more: --after=a2 (with the same filters)"]
    assert "pc1: 2 devices on this page" in first.stdout and "pc2" not in first.stdout
    seen, after = ["a1", "a2"], "a2"
    while after:  # follow the cursors to the end, as an operator would
        next_page = jobsys(db_url, "devices", "list", "--json", "--limit", "2", f"--after={after}")
        assert next_page.returncode == 0, next_page.stderr
        page = json.loads(next_page.stdout)
        seen += [device["serial"] for device in page["devices"]]
        after = page["next_cursor"]
        assert page["total"] == 5 and page["summary"]["total"] == 5
    assert seen == ["a1", "a2", "b1", "c1", "c2"]  # each once, in serial order
    last = jobsys(db_url, "devices", "list", "--limit", "2", "--after", "b1").stdout
    assert "pc1" not in last and "pc2: 2 devices on this page" in last and "more:" not in last
    past_the_end = jobsys(db_url, "devices", "list", "--after", "c2").stdout.strip()
    assert past_the_end == "no devices after c2 (5 matching; 5 devices: 5 connected, 5 idle)"
    assert "pc1: 3 devices\n" in jobsys(db_url, "devices", "list").stdout  # the whole fleet: no "on this page"


def test_list_filters_by_status_pc_label_and_search(db: Db, db_url: str) -> None:
    register_two_pcs(db)
    assert jobsys(db_url, "devices", "disable", "b1").returncode == 0
    assert listed_serials(db_url, "--status", "disabled") == ["b1"]
    assert listed_serials(db_url, "--status", "connected") == ["a1", "a2", "c1", "c2"]
    assert listed_serials(db_url, "--pc", "pc2") == ["c1", "c2"]
    for serial in ("a1", "a2"):
        assert jobsys(db_url, "devices", "label", serial, "rack=A").returncode == 0
    assert listed_serials(db_url, "--label", "rack=A") == ["a1", "a2"]
    assert listed_serials(db_url, "--label", "rack=A", "--label", "model=Pixel") == ["a1"]  # every label
    assert listed_serials(db_url, "--search", "a") == ["a1", "a2"]
    assert listed_serials(db_url, "--search", "1", "--pc", "pc1") == ["a1", "b1"]
    none = jobsys(db_url, "devices", "list", "--pc", "nope")
    assert none.stdout.strip() == "no devices match (5 devices: 4 connected, 4 idle, 1 disabled)"


def test_bad_list_options_are_refused_in_one_line_and_change_nothing(db: Db, db_url: str) -> None:
    register(db)
    before = db.dump()
    assert "status must be one of connected, idle" in refused_in_one_line(
        jobsys(db_url, "devices", "list", "--status", "sleeping"), 2)
    for limit in ("0", "1001"):
        refused = refused_in_one_line(jobsys(db_url, "devices", "list", "--limit", limit), 2)
        assert "limit must be 1..1000" in refused
    assert "key=value" in refused_in_one_line(jobsys(db_url, "devices", "list", "--label", "rack"), 2)
    assert "--search must be at most 200 characters" in refused_in_one_line(
        jobsys(db_url, "devices", "list", "--search", "x" * 201), 2)
    assert "cursor" in refused_in_one_line(jobsys(db_url, "devices", "list", "--after", ""), 2)
    assert db.dump() == before


def test_a_device_is_found_by_serial_or_id_among_serials_containing_it(db: Db, db_url: str) -> None:
    # 150 serials contain "a1" and sort before it: finding a1 pages past them
    decoys = [{"serial": f"0a1-{n:03}"} for n in range(150)]
    register(db, "pc1", [*decoys, {"serial": "a1"}, {"serial": "a10"}])
    shown = jobsys(db_url, "devices", "show", "a1")
    assert shown.returncode == 0 and shown.stdout.startswith(f"a1 ({device_id(db, 'a1')})"), shown.stderr
    assert jobsys(db_url, "devices", "disable", device_id(db, "a10").upper()).stdout.strip() == \
        "a10: disabled, now disabled (disabled by an operator)"
    assert db.value("select state from jobsys.devices where serial = 'a1'") != "disabled"
    assert "no device with serial or id a" in refused_in_one_line(jobsys(db_url, "devices", "show", "a"), 1)


async def test_resolving_a_device_reads_no_fleet(
        db: Db, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    register(db)

    async def whole_fleet(self: JobSystem) -> None:
        raise AssertionError("read the whole fleet")

    monkeypatch.setattr(JobSystem, "list_devices", whole_fleet)
    async with await JobSystem.connect(db_url, push=False) as jobs:
        assert (await devices_cmd.resolve_device(jobs, "a2")).serial == "a2"
        assert (await devices_cmd.resolve_device(jobs, device_id(db, "b1"))).serial == "b1"


def test_a_text_that_is_one_devices_id_and_anothers_serial_is_refused(db: Db, db_url: str) -> None:
    register(db)
    a1 = device_id(db, "a1")
    register(db, "pc2", [{"serial": a1}])  # a serial is any text, even another device's id
    before = db.dump()
    refused = refused_in_one_line(jobsys(db_url, "devices", "disable", a1), 2)
    assert f"the serial a1 or the id {device_id(db, a1)}" in refused
    assert db.dump() == before
    assert jobsys(db_url, "devices", "disable", "a1").returncode == 0
    assert jobsys(db_url, "devices", "disable", device_id(db, a1)).returncode == 0
