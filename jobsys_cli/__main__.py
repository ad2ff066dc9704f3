"""`python -m jobsys_cli`: the `jobsys` command."""

from __future__ import annotations

import sys

from jobsys_cli.main import main

sys.exit(main())
