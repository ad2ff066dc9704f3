"""`jobsys accounts add|list|revoke`: named operator accounts of embedded mode, each with a
role: viewer (reads everything), operator (also runs jobs and AI batches), admin (also
manages devices, PCs and accounts, and reads the audit log).

`add` prints the account's token once: the dashboard's login and the API's bearer take it,
and every call made with it runs with the account's role (checked by the SQL). The database
keeps only the token's SHA-256 digest. The API token `jobsys up` printed at its first start
stays the all-powerful one, for scripts and the first admin. Refusals are one line on
stderr: exit 2 for a bad name or role, 1 for a name already taken or unknown."""

from __future__ import annotations

import argparse
from typing import Any

import pydantic

from jobsys.operator_accounts import OperatorAccount, OperatorAccountName, StaffRole
from jobsys.system import JobSystem
from jobsys_cli import process
from jobsys_cli.operator import EXIT_OK, print_json, run_with_jobs, table, when
from jobsys_cli.options import add_database_options

NAME_RULE = "account name must be 1-64 printable characters (no control characters)"


def checked_name(name: str) -> str:
    try:
        return OperatorAccountName.model_validate({"name": name}).name
    except pydantic.ValidationError:
        raise process.CommandError(NAME_RULE) from None


def accounts_text(accounts: list[OperatorAccount], *, with_revoked: bool) -> str:
    if not accounts:
        return "no accounts yet; add one with: jobsys accounts add NAME --role viewer|operator|admin"
    headers = ["NAME", "ROLE", "CREATED", "LAST SEEN"] + (["STATE"] if with_revoked else [])
    rows = [[a.name, a.role.value, when(a.created_at), when(a.last_seen_at)]
            + ([f"revoked {when(a.revoked_at)}" if a.revoked_at else "active"] if with_revoked else [])
            for a in accounts]
    return table(headers, rows)


def cmd_add(args: argparse.Namespace) -> int:
    name = checked_name(args.name)

    async def body(jobs: JobSystem) -> int:
        enrolled = await jobs.add_operator_account(name, args.role)
        if args.json:
            print_json({"account": enrolled.account.model_dump(mode="json"), "token": enrolled.token})
        else:
            print(f"added {enrolled.account.role.value} {enrolled.account.name}. Its token, shown this once "
                  "(the database keeps only its SHA-256 digest):\n\n"
                  f"  {enrolled.token}\n\n"
                  "Log in to the dashboard with it, or send it as the API's bearer token.")
        return EXIT_OK

    return run_with_jobs(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    async def body(jobs: JobSystem) -> int:
        listed = await jobs.list_operator_accounts(include_revoked=args.all)
        if args.json:
            print_json(listed.model_dump(mode="json"))
        else:
            print(accounts_text(listed.accounts, with_revoked=args.all))
        return EXIT_OK

    return run_with_jobs(args, body)


def cmd_revoke(args: argparse.Namespace) -> int:
    name = checked_name(args.name)

    async def body(jobs: JobSystem) -> int:
        account = await jobs.revoke_operator_account(name)
        if args.json:
            print_json(account.model_dump(mode="json"))
        else:
            print(f"revoked {account.name}: its token is refused from now on")
        return EXIT_OK

    return run_with_jobs(args, body)


def add_parser(subparsers: Any) -> None:
    accounts = subparsers.add_parser("accounts", help="named operator accounts: viewer, operator, admin")
    sub = accounts.add_subparsers(dest="accounts_command", required=True)
    add = sub.add_parser("add", help="a new account and its token (shown once)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in StaffRole],
                     help="viewer: reads; operator: also jobs and AI batches; admin: also devices, PCs, accounts")
    listing = sub.add_parser("list", help="the accounts, with role and last use")
    listing.add_argument("--all", action="store_true", help="include revoked accounts")
    revoke = sub.add_parser("revoke", help="refuse an account's token from now on")
    revoke.add_argument("name")
    for parser, handler in ((add, cmd_add), (listing, cmd_list), (revoke, cmd_revoke)):
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        add_database_options(parser)
        parser.set_defaults(handler=handler)
