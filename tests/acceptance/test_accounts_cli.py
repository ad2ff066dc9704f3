"""`jobsys accounts add|list|revoke` (issue 21): named operator accounts with a role, in a
subprocess against a migrated database; the token is shown once and works as the API's
bearer with its role."""

from __future__ import annotations

import json
import re

from tests.acceptance.test_jobs_cli import jobsys, refused_in_one_line
from tests.support.postgres import Db


def test_add_list_revoke_and_the_token_is_stored_hashed(db: Db, db_url: str) -> None:
    added = jobsys(db_url, "accounts", "add", "vera", "--role", "viewer")
    assert added.returncode == 0, added.stderr
    [token] = re.findall(r"\bjso_[A-Za-z0-9_-]{20,}", added.stdout)
    assert "vera" in added.stdout and "shown this once" in added.stdout
    assert db.value("select count(*) from jobsys.operator_accounts where token_hash = %s", (token,)) == 0
    listed = json.loads(jobsys(db_url, "accounts", "list", "--json").stdout)
    assert [(a["name"], a["role"]) for a in listed["accounts"]] == [("vera", "viewer")]
    assert "token" not in json.dumps(listed)
    assert jobsys(db_url, "accounts", "revoke", "vera").stdout.strip().startswith("revoked vera")
    assert "no accounts yet" in jobsys(db_url, "accounts", "list").stdout
    assert "revoked" in jobsys(db_url, "accounts", "list", "--all").stdout


def test_bad_names_and_unknown_accounts_are_refused_in_one_line(db: Db, db_url: str) -> None:
    before = db.dump()
    assert "1-64 printable" in refused_in_one_line(jobsys(db_url, "accounts", "add", " ", "--role", "admin"), 2)
    assert "no active account" in refused_in_one_line(jobsys(db_url, "accounts", "revoke", "nobody"), 1)
    assert db.dump() == before
