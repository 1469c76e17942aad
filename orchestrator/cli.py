"""``headsweep`` command line (docs/design.md "CLI").

    headsweep run [SWEEP.yaml] [--storage DIR] [--address ADDR] [--gpus N] [--cpus N] [--no-analysis]
                  [--allow-drift] [--stall-warning MINUTES]
    headsweep resume SWEEP_DIR [same options]
    headsweep status SWEEP_DIR [--json]
    headsweep validate SWEEP.yaml
    headsweep plan SWEEP.yaml
    headsweep analyze SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--no-execute] [--to DIR]

Bad input exits 2 with one line per problem naming the key and the value; nothing is launched.
Anything printed passes through ``storage.redact``: a URI's secret never reaches the terminal.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from headsweep.orchestrator import checks
from headsweep.orchestrator.plan import Refused, demo_path, plan_file, resume_plan
from headsweep.orchestrator.storage import USE_ENVIRONMENT, has_credentials, parent_and_name, redact
from headsweep.trials import layout
from headsweep.trials.errors import UserError

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_USAGE = 0, 1, 2


# argparse's messages, as ``key: problem (got value)``: (pattern, how to say it).
_USAGE = [
    (r"argument (\S+): invalid choice: '?([^' ]*)'? \(choose from (.*)\)$",
     lambda m: f"{m[1]}: unknown {'command' if m[1] == 'COMMAND' else 'choice'}; choose from "
               f"{m[3].replace(chr(39), '')} (got {m[2]!r})"),
    (r"argument (\S+?)(?:/\S+)?: expected one argument$", lambda m: f"{m[1]}: needs a value (got nothing)"),
    (r"argument (\S+?)(?:/\S+)?: ignored explicit argument (.*)$", lambda m: f"{m[1]}: takes no value (got {m[2]})"),
    (r"argument (\S+?)(?:/\S+)?: invalid \S+ value: (.*)$", lambda m: f"{m[1]}: invalid value (got {m[2]})"),
    (r"argument (\S+?)(?:/\S+)?: (.*)$", lambda m: f"{m[1]}: {m[2]}"),
    (r"the following arguments are required: (.*)$", lambda m: f"{m[1]}: required argument missing (got nothing)"),
    (r"unrecognized arguments: (.*)$", lambda m: f"{m[1].split()[0]}: unrecognized argument (got {m[1]!r})"),
]


def _usage_problem(message: str) -> str:
    for pattern, say in _USAGE:
        m = re.match(pattern, message)
        if m:
            return say(m)
    return message


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``error: key: problem (got value)`` line after the usage line, exit 2."""

    def error(self, message):
        self.print_usage(sys.stderr)
        print(redact(f"error: {_usage_problem(message)}"), file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="headsweep", description="Attention-head importance and pruning "
                 "sweeps on Ray Tune, with significance-tested analysis.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def nonneg(kind):
        def conv(v):
            try:
                x = kind(v)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be a number (got {v!r})")
            if x != x or x in (float("inf"), float("-inf")):
                raise argparse.ArgumentTypeError(f"must be a finite number (got {v!r})")
            if x < 0:
                raise argparse.ArgumentTypeError(f"must be >= 0 (got {v!r})")
            return x
        return conv

    run = sub.add_parser("run", help="run a sweep (no file: the offline demo, configs/demo.yaml)")
    run.add_argument("sweep", nargs="?", help="sweep file (YAML)")
    run.add_argument("--storage", help="where sweep directories go (overrides the file's 'storage')")
    run.add_argument("--address", help="Ray cluster address ('auto', ray://...); default: $RAY_ADDRESS or local")
    run.add_argument("--gpus", type=nonneg(float), help="GPUs to give local Ray (default: all visible)")
    run.add_argument("--cpus", type=nonneg(float), help="CPUs to give local Ray (default: all)")
    run.add_argument("--no-analysis", action="store_true", help="skip the analysis at the end")
    run.add_argument("--verbose", action="store_true", help="Ray Tune's per-trial tables and Ray's logs "
                     "in the terminal (default: one progress display; logs in SWEEP_DIR/logs)")

    res = sub.add_parser("resume", help="continue a stopped sweep without re-running finished trials")
    res.add_argument("sweep_dir")
    res.add_argument("--address")
    res.add_argument("--gpus", type=nonneg(float))
    res.add_argument("--cpus", type=nonneg(float))
    res.add_argument("--no-analysis", action="store_true")
    res.add_argument("--verbose", action="store_true")
    for p in (run, res):
        p.add_argument("--allow-drift", action="store_true", help="go on although the data, a hub revision or "
                       "the code changed since the sweep started (recorded in SWEEP_DIR/" + layout.DRIFT + ")")
        p.add_argument("--stall-warning", type=nonneg(float), default=10.0, metavar="MINUTES",
                       help="warn when no trial started or finished for this long while trials wait (default 10)")

    st = sub.add_parser("status", help="per-stage trial counts and errors")
    st.add_argument("sweep_dir")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    val = sub.add_parser("validate", help="check a sweep file; launches nothing (exit 2 on problems)")
    val.add_argument("sweep")

    pla = sub.add_parser("plan", help="validate, then the grid, peak concurrency and a cost estimate")
    pla.add_argument("sweep")

    an = sub.add_parser("analyze", help="statistics, figures, executed notebook and report")
    an.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR",
                    help="one sweep directory, or several compatible ones to combine (e.g. one per task)")
    an.add_argument("--out", help="where the analysis folder goes (default: the first sweep directory)")
    an.add_argument("--no-execute", action="store_true", help="write the notebook without executing it")
    an.add_argument("--to", help="for s3:// or gs:// sweeps: local directory for the copy (default: a "
                                 "cache folder keyed by the URI, never ./sweeps/<name>; with several sweeps, "
                                 "TO/<name>)")
    return ap


def _mode(args) -> tuple[str | None, dict]:
    address = args.address or os.environ.get("RAY_ADDRESS")
    cpus, gpus = checks.local_capacity(args.cpus, args.gpus)
    return address, {"cpus": cpus, "gpus": gpus, "cluster": bool(address)}


def _print_warnings(pl) -> None:
    for w in pl.warnings:
        print(f"note: {w}", file=sys.stderr)


def _analyze(sweep_dirs, execute: bool = True, out: str | None = None) -> dict:
    from headsweep import analysis
    return analysis.analyze(sweep_dirs, execute=execute, out=out)


def _run(pl, args) -> int:
    """Run (or resume: the same thing) a planned sweep, then its analysis. Exit 0 only when every
    trial has its result (or was skipped because its fine-tune errored for good is exit 1)."""
    from headsweep.orchestrator.driver import run_sweep
    address, local = _mode(args)
    _print_warnings(pl)
    t0 = time.time()
    s = run_sweep(pl, address=address, cpus=local["cpus"], gpus=local["gpus"], verbose=args.verbose,
                  allow_drift=args.allow_drift, stall_s=60.0 * args.stall_warning)
    where = redact(pl.store.root)
    if s["ran"] == 0 and s["done"] == s["trials"]:
        print(f"headsweep: all {s['trials']} trials were already done; nothing to run")
    else:
        print(f"headsweep: {s['done']} of {s['trials']} trials done in {time.time() - t0:.0f} s; "
              f"results: {redact(pl.store.uri(layout.RESULTS))}")
    if s["errored"]:
        print(f"headsweep: {s['errored']} trials errored" + (f", {s['skipped']} skipped because their "
              "fine-tune errored" if s["skipped"] else "") + f"; see: headsweep status {where} "
              f"(headsweep resume {where} tries them again)", file=sys.stderr)
    if s["not_run"]:
        why = ("the run was stopped" if s["stopped"] else f"Ray Tune failed: {s['failure']}" if s["failure"]
               else "Ray Tune ended without running them")
        print(f"headsweep: {s['not_run']} trials did not run ({why}); continue with: headsweep resume {where}",
              file=sys.stderr)
    if not args.no_analysis and s["done"]:
        if pl.store.local is None:
            print("headsweep: analysis runs on a local copy: headsweep analyze " + where, file=sys.stderr)
        else:
            paths = _analyze(pl.store.root)
            from headsweep.orchestrator.headline import print_headline
            print_headline(paths, sys.stdout)
            print(f"headsweep: report: {paths['report']}\nheadsweep: notebook: {paths['notebook']}\n"
                  f"headsweep: figures: {paths['figures']}")
    return EXIT_OK if s["done"] == s["trials"] else EXIT_TRIALS_FAILED


def _refuse_credentials(args) -> None:
    """A secret on the command line ends up in the shell history and in spec.yaml: refused."""
    for key in ("storage", "address", "sweep_dir", "to", "out"):
        v = getattr(args, key, None)
        if isinstance(v, str) and has_credentials(v):
            raise Refused([f"--{key.replace('_', '-')}: {USE_ENVIRONMENT} (got {redact(v)!r})"
                           if key != "sweep_dir" else f"SWEEP_DIR: {USE_ENVIRONMENT} (got {redact(v)!r})"])
    for v in getattr(args, "sweep_dirs", None) or []:
        if has_credentials(v):
            raise Refused([f"SWEEP_DIR: {USE_ENVIRONMENT} (got {redact(v)!r})"])


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # usage errors (already printed) and --help: an exit code, as documented
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    try:
        _refuse_credentials(args)
        if args.command == "validate":
            pl = plan_file(args.sweep)
            _print_warnings(pl)
            print(f"ok: {pl.sweep.name}: {len(pl.stage_a)} stage-A fine-tunes, {len(pl.stage_b)} "
                  f"stage-B trials -> {redact(pl.store.root)}")
            return EXIT_OK
        if args.command == "plan":
            from headsweep.orchestrator.estimate import plan_report
            pl = plan_file(args.sweep)
            _print_warnings(pl)
            print("\n".join(plan_report(pl)))
            return EXIT_OK
        if args.command == "run":
            _, local = _mode(args)
            path = args.sweep or demo_path()
            pl = plan_file(path, storage=args.storage, local=local)
            return _run(pl, args)
        if args.command == "resume":
            _, local = _mode(args)
            pl = resume_plan(args.sweep_dir, local)
            return _run(pl, args)
        if args.command == "status":
            from headsweep.orchestrator.status import format_status, status_json, sweep_status
            r = sweep_status(args.sweep_dir)
            print(status_json(r) if args.json else format_status(r))
            return EXIT_OK
        if args.command == "analyze":
            from headsweep.orchestrator.sweepdir import local_copy
            many = len(args.sweep_dirs) > 1
            dirs = [local_copy(d, str(Path(args.to) / parent_and_name(d)[1]) if args.to and many else args.to)
                    for d in args.sweep_dirs]
            paths = _analyze(dirs if many else dirs[0], execute=not args.no_execute, out=args.out)
            from headsweep.orchestrator.headline import print_headline
            print_headline(paths, sys.stdout)
            for k, v in paths.items():
                print(f"{k}: {v}")
            return EXIT_OK
    except Refused as e:
        for line in e.lines:
            print(redact(f"error: {line}"), file=sys.stderr)
        return EXIT_USAGE
    except UserError as e:  # bad input found after validation (e.g. while reading a sweep directory)
        print(redact(f"error: {' '.join(str(e).split())}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("headsweep: interrupted; continue with: headsweep resume SWEEP_DIR", file=sys.stderr)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
