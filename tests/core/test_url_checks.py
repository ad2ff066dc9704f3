"""Issue 16, defect 8: the host of a job's URL is checked, the same way in pydantic
(jobsys.models.check_url, so the API answers 422) and in SQL (jobsys.check_target_url, which
create_job calls, so a direct caller gets JS400). One table of URLs runs against both layers;
a refused URL stores nothing.

International names are checked by their IDNA (punycode) form and stored as typed."""

from __future__ import annotations


import httpx
import psycopg
import pytest

from jobsys.models import url_host_problem
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.core.test_access import OPERATOR, WORKER_A, as_user
from tests.support.postgres import Db

REGISTER = "select jobsys.register_worker('w', 'h', '[{\"serial\": \"p1\"}]')"
LABEL_63 = "".join(chr(0xAC00 + 7 * i) for i in range(29))   # 29 Hangul syllables: xn--... of 63
LABEL_64 = "".join(chr(0xAC00 + 13 * i) for i in range(29))  # xn--... of 64

GOOD = [
    "https://example.com/",
    "http://example.com:8080/path?q=1#frag",
    "HTTPS://EXAMPLE.COM",
    "https://localhost/",
    "https://a-b.c-d.example.com/x@y",               # @ in the path is not userinfo
    "https://example.com/?next=https://a@b.example",  # nor in the query
    "https://example.com#@evil.example",              # nor in the fragment
    "https://192.168.0.10/status",
    "https://[2001:db8::1]:8443/",
    "https://[::ffff:192.0.2.1]/",
    "https://한국.kr/",
    "https://Bücher.example/",
    "https://xn--3e0b707e.kr/",                       # the same name, typed as punycode
    "https://" + "a" * 63 + ".com/",                   # the longest label
    "https://" + LABEL_63 + ".kr/",
    "https://" + ".".join(["a" * 63] * 3 + ["b" * 61]) + "/",  # a 253-character host
    "https://example.com:65535/",
]

BAD = [
    "https://evil.com@good.com/",      # the reported case: the title said evil.com, the host is good.com
    "https://user:pass@good.com/",
    "https://@good.com/",
    "https://ex<ample.com/",          # the reported case: < in the host
    "https://exa mple.com/",          # a space
    "https://exa%20mple.com/",
    "https://exa_mple.com/",
    "https://exa\\mple.com/",
    "https://good.com\\@evil.com/",
    "https://-example.com/",
    "https://example-.com/",
    "https://example..com/",
    "https://example.com./",          # no empty label, a trailing dot included
    "https://.example.com/",
    "https://" + "a" * 64 + ".com/",
    "https://" + LABEL_64 + ".kr/",  # its punycode label is longer than 63
    "https://" + ".".join(["a" * 63] * 3 + ["b" * 62]) + "/",  # 254 characters
    "https://999.1.1.1/",
    "https://1.2.3/",
    "https://01.2.3.4/",
    "https://example.123/",
    "https://example.com:0/",
    "https://example.com:65536/",
    "https://example.com:http/",
    "https://example.com:/",
    "https://:443/",
    "https://",
    "https://[::1/",
    "https://[1.2.3.4]/",
    "https://[fe80::1%25eth0]/",
    "https://[::1]x/",
    "https://ex\U0001F600ample.com/",  # emoji
    "https://exa\u200bmple.com/",      # zero-width space
    "https://example\uff0ecom/",       # fullwidth full stop
    "https://\u202eexample.com/",      # right-to-left override
    "https://한국\u3002kr/",            # ideographic full stop
    "ftp://example.com/",
    "javascript:alert(1)",
]


def create_job_sql(url: str) -> str:
    return "select jobsys.create_job('" + url.replace("'", "''") + "', 5, 'all_devices')"


def test_the_table_covers_both_outcomes() -> None:
    assert len(GOOD) >= 15 and len(BAD) >= 30
    assert not set(GOOD) & set(BAD)
    assert [len("xn--" + label.encode("punycode").decode()) for label in (LABEL_63, LABEL_64)] == [63, 64]


async def test_the_api_refuses_bad_hosts_with_422_and_stores_nothing(
    api: httpx.AsyncClient, jobs: JobSystem, db: Db
) -> None:
    await add_worker(jobs, "w1", 2)
    failures: list[str] = []
    for url in BAD:
        before = db.dump()
        response = await api.post("/api/jobs", json={"target_url": url, "duration_sec": 5})
        if response.status_code != 422 or response.json()["error"]["code"] != "invalid_input":
            failures.append(f"{url!r}: {response.status_code} {response.text[:200]}")
        elif db.dump() != before:
            failures.append(f"{url!r}: something was stored")
    for url in GOOD:
        response = await api.post("/api/jobs", json={"target_url": url, "duration_sec": 5})
        if response.status_code != 201:
            failures.append(f"{url!r} refused: {response.status_code} {response.text[:300]}")
        elif response.json()["job"]["target_url"] != url:
            failures.append(f"{url!r} stored as {response.json()['job']['target_url']!r}")
    assert not failures, "\n".join(failures)


def test_sql_refuses_bad_hosts_with_js400_and_stores_nothing(db: Db) -> None:
    as_user(db, "authenticated", WORKER_A, REGISTER)
    failures: list[str] = []
    before = db.dump()
    for url in BAD:
        try:
            as_user(db, "authenticated", OPERATOR, create_job_sql(url))
            failures.append(f"{url!r} accepted")
        except psycopg.Error as exc:
            if exc.sqlstate != "JS400":
                failures.append(f"{url!r}: {exc.sqlstate} {exc}")
    if db.dump() != before:
        failures.append("something was stored")
    for url in GOOD:
        rows = as_user(db, "authenticated", OPERATOR, create_job_sql(url))
        job = rows[0][0]["job"]
        if job["target_url"] != url:
            failures.append(f"{url!r} stored as {job['target_url']!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("label", [
    "한국", "bücher", "Bücher", "münchen-ost", "ü", "例え", "παράδειγμα", "пример", "中文" * 10,
    "a\u00e9b\u00e9c", "\u0915\u093f", LABEL_63, LABEL_64,
])
def test_sql_punycode_is_python_punycode(db: Db, label: str) -> None:
    assert db.value("select jobsys.punycode(%s)", (label,)) == label.encode("punycode").decode("ascii")


def test_the_python_check_names_the_problem() -> None:
    assert url_host_problem("https://example.com/") is None
    assert "user" in (url_host_problem("https://evil.com@good.com/") or "")
    assert "port" in (url_host_problem("https://example.com:99999/") or "")
    assert "host" in (url_host_problem("https://ex<ample.com/") or "")
