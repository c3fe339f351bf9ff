"""The ``clrfast`` command: ``demo``, ``plot``, ``table`` and ``bench``.

``main(argv)`` returns the exit status: 0 on success, 2 on a usage error (a bad
schedule spec, a bad option), printed as one line ``clrfast: error: ...``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ._spec import SpecError, parse_spec, policies_help


class UsageError(Exception):
    """Bad command-line input: reported as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see '{self.prog} --help')")


_DESCRIPTION = """\
cyclical learning-rate schedules with a compiled core.

commands:
  demo    train a small CNN on scikit-learn's digits: LR range test, then fixed LR,
          triangular, triangular2, exp_range and one-cycle compared (start here)
  plot    draw a schedule's lr and momentum to a PNG
  table   write a schedule's lr and momentum per step (CSV, .npy, or stdout)
  bench   a few seconds of timings against torch and NumPy
"""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="clrfast", description=_DESCRIPTION, epilog=policies_help(), formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"clrfast {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    from .demo import add_arguments

    d = sub.add_parser("demo", help="LR range test and five policies on real data (about a minute on CPU)",
                       description=__import__("clrfast.demo", fromlist=["x"]).__doc__, formatter_class=fmt)
    add_arguments(d)

    for name, what in (("plot", "draw lr (and momentum) over steps to a PNG"),
                       ("table", "lr and momentum per step as CSV (step,lr,momentum), .npy, or stdout")):
        c = sub.add_parser(name, help=what, description=what, epilog=policies_help(), formatter_class=fmt)
        c.add_argument("spec", nargs="+", metavar="SPEC",
                       help="POLICY key=value ... or a JSON file written from to_dict()")
        c.add_argument("--steps", type=int, required=True, help="number of steps, 0..N-1")
        if name == "plot":
            c.add_argument("-o", "--output", default="lr.png", help="PNG to write (default: %(default)s)")
            c.add_argument("--logy", action="store_true", help="log scale for the lr axis")
            c.add_argument("--title", default=None, help="figure title (default: the schedule)")
        else:
            c.add_argument("-o", "--output", default=None, help="a .csv or .npy file (default: CSV on stdout)")
    sub.add_parser("bench", help="quick timings against torch and NumPy (seconds)",
                   description=__import__("clrfast.quickbench", fromlist=["x"]).__doc__, formatter_class=fmt)
    return p


def main(argv=None) -> int:
    """Run the command line; returns the exit status (also used as the console script)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help and --version exit through argparse
            return int(e.code or 0)
        if args.command is None:
            parser.print_help()
            return 0
        return _COMMANDS[args.command](args)
    except (UsageError, SpecError) as e:
        print(f"clrfast: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"clrfast: error: {e}", file=sys.stderr)
        return 1


def _schedule_and_steps(args):
    schedule = parse_spec(args.spec)
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    last = schedule.max_step
    if last is not None and args.steps - 1 > last:
        raise UsageError(f"--steps {args.steps} runs past the schedule's last step {last}")
    return schedule, args.steps


def _cmd_plot(args) -> int:
    schedule, n = _schedule_and_steps(args)
    _check_dir(args.output)
    from .plotting import plot

    plot(schedule, n, path=args.output, logy=args.logy, title=args.title)
    print(f"wrote {args.output} ({n} steps of {type(schedule).__name__})")
    return 0


def _cmd_table(args) -> int:
    schedule, n = _schedule_and_steps(args)
    lr = schedule.lr_table(n)
    mom = schedule.momentum_table(n)
    if mom is None:
        mom = np.full(n, np.nan)
    out = args.output
    if out is not None and out.lower().endswith(".npy"):
        _check_dir(out)
        np.save(out, np.column_stack([np.arange(n, dtype=np.float64), lr, mom]))
        print(f"wrote {out}: array ({n}, 3) of step, lr, momentum")
        return 0
    if out is not None and not out.lower().endswith(".csv"):
        raise UsageError(f"-o must name a .csv or .npy file, got {out!r}")
    lines = ["step,lr,momentum"]
    lines += [f"{i},{a!r},{'' if np.isnan(b) else repr(b)}" for i, a, b in zip(range(n), lr.tolist(), mom.tolist())]
    text = "\n".join(lines) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        _check_dir(out)
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {out}: {n} rows of step,lr,momentum")
    return 0


def _cmd_bench(args) -> int:
    from . import quickbench

    quickbench.run()
    return 0


def _cmd_demo(args) -> int:
    from . import demo

    try:
        cfg = demo.config_from_args(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    demo.run_demo(out=args.out, cfg=cfg, quiet=args.quiet)
    return 0


def _check_dir(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"folder {os.path.dirname(path)!r} of {path!r} does not exist")


_COMMANDS = {"plot": _cmd_plot, "table": _cmd_table, "bench": _cmd_bench, "demo": _cmd_demo}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
