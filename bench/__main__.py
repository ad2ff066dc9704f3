"""python -m bench [NAME ...] [--quick] | python -m bench report | python -m bench list"""

from __future__ import annotations

import argparse
import sys

from bench.registry import BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run jobsys benchmarks side by side with their baselines; "
                    "`report` regenerates docs/benchmarks.md from bench/results/.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}; or `report`, `list`")
    parser.add_argument("--quick", action="store_true", help="a short version (fewer sizes and runs)")
    args = parser.parse_args(argv)

    if args.names == ["report"]:
        from bench import report

        print(report.write())
        return 0
    if args.names == ["list"]:
        for bench in BENCHMARKS.values():
            print(f"{bench.name:16} {bench.description}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    from bench import runner

    return runner.run(args.names, args.quick)


if __name__ == "__main__":
    sys.exit(main())
