"""`jobsys workers add|list|revoke`: the PCs that join this `jobsys up` (the hub), each with
its own worker token.

`add` prints the token once, with the one command to run on that PC; the database keeps only
the token's SHA-256 digest, so it cannot be shown again (revoke and add the PC again instead).
`revoke` refuses the token from then on: the PC's sessions end and its devices go offline.
Refusals are one line on stderr: exit 2 for a bad name, 1 for a name already taken or unknown."""

from __future__ import annotations

import argparse
from typing import Any

import pydantic

from jobsys.config import ENV_WORKER_TOKEN
from jobsys.system import JobSystem
from jobsys.worker_accounts import WorkerAccount, WorkerAccountName, join_command
from jobsys_cli import process
from jobsys_cli.dashboard import public_url
from jobsys_cli.operator import EXIT_OK, print_json, run_with_jobs, table, when
from jobsys_cli.options import add_database_options

DEFAULT_PORT = 8080  # `jobsys up`'s
NAME_RULE = "PC name must be 1-64 printable characters (no control characters)"
INSTALL_HINT = "install jobsys (Python 3.11+; from a copy of this repository: `pip install ./jobsys`)"


def default_server() -> str:
    """How other PCs reach a `jobsys up --host 0.0.0.0` on this machine's default port."""
    return public_url(argparse.Namespace(host="0.0.0.0", port=DEFAULT_PORT, tls_cert=None))


def checked_name(name: str) -> str:
    """The name as the library stores it (stripped); a refusal (exit 2) before anything is sent."""
    try:
        return WorkerAccountName.model_validate({"name": name}).name
    except pydantic.ValidationError:
        raise process.CommandError(NAME_RULE) from None


def checked_server(server: str) -> str:
    server = server.strip().rstrip("/")
    if not server.startswith(("http://", "https://")) or len(server) <= len("https://"):
        raise process.CommandError(
            f"--server must be an http:// or https:// address, e.g. {default_server()}")
    return server


# Output -----------------------------------------------------------------------------------
def _sessions(account: WorkerAccount) -> str:
    if not account.sessions:
        return "-"
    stale = sum(not s.healthy for s in account.sessions)
    return f"{len(account.sessions)}" + (f" ({stale} not responding)" if stale else "")


def _distinct(values: list[str | None]) -> str:
    seen = [v for v in dict.fromkeys(values) if v]
    return ", ".join(seen) if seen else "-"


def accounts_text(accounts: list[WorkerAccount], *, with_revoked: bool) -> str:
    if not accounts:
        return "no PCs yet; add one with: jobsys workers add NAME"
    headers = ["NAME", "CREATED", "LAST SEEN", "SESSIONS", "HOSTS", "DEVICES", "PUSH", "VERSION"]
    rows = []
    for a in accounts:
        row = [a.name, when(a.created_at), when(a.last_seen_at), _sessions(a),
               _distinct([s.hostname for s in a.sessions]), str(a.device_count),
               _distinct([s.push for s in a.sessions]), _distinct([s.version for s in a.sessions])]
        if with_revoked:
            row.append(f"revoked {when(a.revoked_at)}" if a.revoked_at else "active")
        rows.append(row)
    return table(headers + (["STATE"] if with_revoked else []), rows)


def enrolled_text(name: str, token: str, server: str) -> str:
    return "\n".join([
        f"added PC {name}. Its worker token, shown this once (the database keeps only its SHA-256 digest):",
        "",
        f"  {token}",
        "",
        f"On that PC, {INSTALL_HINT}, then run:",
        "",
        f"  {join_command(server, token)}",
        "",
        (f"(or `{ENV_WORKER_TOKEN}=<token> jobsys worker --server {server}`, which keeps the token out of "
         "the process list)."),
        (f"{server} must be how that PC reaches this `jobsys up` (started with --host 0.0.0.0); "
         "--server URL prints another address."),
    ])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# Commands ---------------------------------------------------------------------------------
def cmd_add(args: argparse.Namespace) -> int:
    name = checked_name(args.name)
    server = checked_server(args.server) if args.server is not None else default_server()

    async def body(jobs: JobSystem) -> int:
        enrolled = await jobs.add_worker_account(name)
        if args.json:
            print_json({"account": enrolled.account.model_dump(mode="json"), "token": enrolled.token,
                        "server": server, "command": join_command(server, enrolled.token)})
        else:
            print(enrolled_text(enrolled.account.name, enrolled.token, server))
        return EXIT_OK

    return run_with_jobs(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    async def body(jobs: JobSystem) -> int:
        listed = await jobs.list_worker_accounts(include_revoked=args.all)
        if args.json:
            print_json(listed.model_dump(mode="json"))
        else:
            print(accounts_text(listed.accounts, with_revoked=args.all))
        return EXIT_OK

    return run_with_jobs(args, body)


def cmd_revoke(args: argparse.Namespace) -> int:
    name = checked_name(args.name)

    async def body(jobs: JobSystem) -> int:
        # What it had just before: the revoked account lists no live sessions any more.
        before = next((a for a in (await jobs.list_worker_accounts()).accounts if a.name == name), None)
        revoked = await jobs.revoke_worker_account(name)
        sessions = len(before.sessions) if before else 0
        devices = before.device_count if before else 0
        if args.json:
            print_json({"account": revoked.model_dump(mode="json"), "sessions_ended": sessions,
                        "devices_offline": devices})
        else:
            print(f"revoked PC {revoked.name}: its token is refused from now on; "
                  f"{_plural(sessions, 'session')} ended, {_plural(devices, 'device')} offline")
        return EXIT_OK

    return run_with_jobs(args, body)


def add_parser(subparsers: Any) -> None:
    workers = subparsers.add_parser(
        "workers", help="PCs that join this `jobsys up` with their own worker token",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = workers.add_subparsers(dest="workers_command", required=True)

    add = sub.add_parser("add", help="add a PC: prints its token (once) and the command to run on it")
    add.add_argument("name", metavar="NAME", help="the PC's name, 1-64 printable characters")
    add.add_argument("--server", metavar="URL",
                     help="how that PC reaches this `jobsys up`, printed in its command "
                          "(default: http://<this host's name>:8080)")
    add.add_argument("--json", action="store_true", help="print JSON (account, token, server, command)")
    add_database_options(add)
    add.set_defaults(handler=cmd_add)

    listing = sub.add_parser("list", help="the PCs: last seen, live sessions, devices, push state, version")
    listing.add_argument("--all", action="store_true", help="include revoked PCs")
    listing.add_argument("--json", action="store_true", help="print JSON (one document) instead of text")
    add_database_options(listing)
    listing.set_defaults(handler=cmd_list)

    revoke = sub.add_parser("revoke", help="refuse a PC's token from now on; its sessions end, its devices "
                                           "go offline")
    revoke.add_argument("name", metavar="NAME", help="the PC's name")
    revoke.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_database_options(revoke)
    revoke.set_defaults(handler=cmd_revoke)
