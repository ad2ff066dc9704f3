"""jobsys benchmarks: our numbers and a faithful baseline, side by side, in one run.

`python -m bench` runs every benchmark; `python -m bench NAME` one; `--quick` a short
version; `python -m bench report` regenerates docs/benchmarks.md from bench/results/.
Speed is measured here, never asserted in tests.
"""
