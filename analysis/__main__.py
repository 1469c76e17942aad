"""python -m analysis SWEEP_DIR [--no-execute] [--timeout S]: what `headsweep analyze` runs."""

import argparse
import sys

from .notebook import analyze


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    ap.add_argument("sweep_dir")
    ap.add_argument("--no-execute", action="store_true", help="write the notebook without running it")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per notebook cell")
    args = ap.parse_args(argv)
    try:
        paths = analyze(args.sweep_dir, execute=not args.no_execute, timeout=args.timeout)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
