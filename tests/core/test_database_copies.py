"""The test suite's database copies (tests/support/postgres.py DatabaseCopies): each take()
is a fresh copy of the template, and a copy that cannot be made fails every later take()
instead of leaving the suite waiting."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from jobsys import embedded
from tests.support.postgres import TEMPLATE_DB, DatabaseCopies


def database_names(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url) as conn:
        return {name for (name,) in conn.execute("select datname from pg_database")}


def test_each_copy_is_fresh_and_closing_drops_the_ones_made_ahead(pg_server: Any, template_url: str) -> None:
    admin = pg_server.get_uri()
    before = database_names(admin)
    copies = DatabaseCopies(admin, TEMPLATE_DB)
    first, second = copies.take(), copies.take()
    assert first != second and {first, second} <= database_names(admin)
    with psycopg.connect(embedded.database_url(admin, first)) as conn:
        assert conn.execute("select count(*) from jobsys.jobs").fetchone() == (0,)
    copies.drop(first)
    copies.drop(second)
    copies.close()
    assert database_names(admin) == before  # nothing made ahead is left behind


def test_a_copy_that_fails_fails_every_later_take(pg_server: Any) -> None:
    copies = DatabaseCopies(pg_server.get_uri(), "no_such_template")
    for _ in range(2):
        with pytest.raises(RuntimeError, match="no database copy") as failure:
            copies.take()
        assert isinstance(failure.value.__cause__, psycopg.Error)
    copies.close()
