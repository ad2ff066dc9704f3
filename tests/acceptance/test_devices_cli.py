"""`jobsys devices show|disable|drain|enable|label|reboot` and `jobs create --label` (issue 19):
the real command in a subprocess, against a migrated database with a registered worker."""

from __future__ import annotations

import json

from tests.acceptance.test_jobs_cli import jobsys, refused_in_one_line
from tests.support.postgres import Db


def register(db: Db) -> None:
    db.run("select jobsys.register_worker('pc1', 'h', %s::jsonb)", (json.dumps(
        [{"serial": "a1", "labels": {"model": "Pixel"}}, {"serial": "a2"}, {"serial": "b1"}]),))


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
