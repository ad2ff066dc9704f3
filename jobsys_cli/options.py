"""Flags more than one command takes."""

from __future__ import annotations

import argparse
import pathlib

from jobsys.config import ENV_DATABASE_URL
from jobsys.embedded import ENV_DATA_DIR


def add_database_options(parser: argparse.ArgumentParser, *, joinable: bool = True) -> None:
    """--database-url and --data-dir. `joinable`: the command can join a running `jobsys up`
    by its data directory, and the help says so."""
    join_hint = "; give the same one as a running `jobsys up` to join it" if joinable else ""
    parser.add_argument("--database-url", help=f"Postgres URL (default: ${ENV_DATABASE_URL}, else embedded)")
    parser.add_argument("--data-dir", type=pathlib.Path,
                        help=f"embedded Postgres data directory (default: ${ENV_DATA_DIR} "
                             f"or the user data dir){join_hint}")


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="dashboard, API and hub address (default 127.0.0.1: this PC only; 0.0.0.0 serves "
                             "other PCs; plain HTTP is for a trusted LAN, else add --tls-cert/--tls-key)")
    parser.add_argument("--port", type=int, default=8080, help="dashboard and API port (default 8080)")
    parser.add_argument("--public-docs", action="store_true",
                        help="serve the API docs (/docs, /openapi.json) to anyone; by default /openapi.json "
                             "needs the bearer token and /docs a browser logged in to the dashboard")
    parser.add_argument("--metrics-public", action="store_true",
                        help="serve GET /metrics (Prometheus) to anyone; by default it needs the bearer token")
    parser.add_argument("--tls-cert", type=pathlib.Path, metavar="PEM",
                        help="serve HTTPS and WSS with this certificate (chain), with --tls-key")
    parser.add_argument("--tls-key", type=pathlib.Path, metavar="PEM", help="the certificate's private key")
