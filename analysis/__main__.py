"""python -m headsweep.analysis SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--no-execute] [--timeout S]: what
`headsweep analyze` runs. Several directories are combined (analysis/combine.py)."""

import argparse
import sys

from headsweep.trials import layout
from headsweep.trials.errors import UserError

from .notebook import analyze


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m headsweep.analysis", description=__doc__)
    ap.add_argument("sweep_dirs", nargs="+")
    ap.add_argument("--out", default=None, help=f"write OUT/{layout.ANALYSIS}/ (default: the first sweep directory)")
    ap.add_argument("--no-execute", action="store_true", help="write the notebook without running it")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per notebook cell")
    args = ap.parse_args(argv)
    try:
        paths = analyze(args.sweep_dirs, execute=not args.no_execute, timeout=args.timeout, out=args.out)
    except UserError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
