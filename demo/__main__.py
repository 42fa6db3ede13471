"""`python -m demo [--cluster [--yes]]`: local by default; the cluster path only when asked for."""

from __future__ import annotations

import argparse

from demo.local import run_local


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="install the operator and the CPU example into the current kubectl context (asks first)",
    )
    parser.add_argument("--yes", action="store_true", help="with --cluster: do not ask before installing")
    args = parser.parse_args(argv)
    if args.cluster:
        from demo.cluster import run_cluster

        run_cluster(assume_yes=args.yes)
    else:
        run_local()


if __name__ == "__main__":
    main()
