"""The `jobsys` command: the composition root.

The library (`jobsys`) knows no process; this package starts them. It alone imports the
edges (`worker`, `nicegui_app`) and owns what a process owns: argparse, signals, the
embedded database's lifetime, `asyncio.run`. One module per command group, wired by
jobsys_cli.main. Heavy edges (NiceGUI, device drivers) are imported by the command that
needs them, so `jobsys --help` and `jobsys worker` stay light.
"""
