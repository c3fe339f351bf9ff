"""The ``clrfast`` command: ``demo``, ``plot``, ``table`` and ``bench``.

``main(argv)`` returns the exit status: 0 on success, 2 on a usage error (a bad
schedule spec, option, path, title or size), printed as one line ``clrfast: error: ...``.

A stdout closed early (``clrfast table ... | head``) ends the command quietly with status
141, the ``128 + SIGPIPE`` that ``seq``, ``yes`` or ``cat`` end with there, rather than 0:
under ``set -o pipefail`` a table cut short is still told from a whole one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import warnings

import numpy as np

from ._spec import SpecError, parse_spec, policies_help

# Rows per chunk of a table: memory stays bounded whatever --steps is.
_CHUNK = 1 << 16
# What a shell reports for a command killed by SIGPIPE (128 + 13).
_CLOSED_STDOUT = 141


class UsageError(Exception):
    """Bad command-line input: reported as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see '{self.prog} --help')")


_DESCRIPTION = "cyclical learning-rate schedules with a compiled core."


def _plain(doc: str | None) -> str:
    """A docstring as plain text for --help: reST roles and literals without their markup."""
    text = doc or ""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def _steps(text: str) -> int:
    """--steps: a whole number, also written as 1e6."""
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise argparse.ArgumentTypeError(f"--steps must be a whole number, got {text!r}")
        value = int(value)
    return value


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="clrfast", description=_DESCRIPTION, epilog=policies_help(), formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"clrfast {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    from .demo import add_arguments

    d = sub.add_parser(
        "demo",
        help="start here: an LR range test, then fixed LR, triangular, triangular2, "
        "exp_range, one-cycle (SGD) and AdamW one-cycle compared on scikit-learn's digits "
        "(about a minute on 2 cores)",
        description=_plain(__import__("clrfast.demo", fromlist=["x"]).__doc__),
        formatter_class=fmt,
    )
    add_arguments(d)

    for name, what in (
        ("plot", "draw lr (and momentum) over steps to a PNG"),
        ("table", "lr and momentum per step as CSV (step,lr,momentum), .npy, or stdout"),
    ):
        c = sub.add_parser(name, help=what, description=what, epilog=policies_help(), formatter_class=fmt)
        c.add_argument(
            "spec", nargs="+", metavar="SPEC", help="POLICY key=value ... or a JSON file written from to_dict()"
        )
        c.add_argument("--steps", type=_steps, required=True, help="number of steps, 0..N-1 (1e6 is accepted)")
        if name == "plot":
            c.add_argument(
                "-o",
                "--output",
                default="lr.png",
                help="image to write; PNG unless the extension names another format matplotlib "
                "writes (.svg, .pdf, ...) (default: %(default)s)",
            )
            c.add_argument(
                "--logy",
                action="store_true",
                default=None,
                help="log scale for the lr axis (default: log for an exponential sweep)",
            )
            c.add_argument("--title", default=None, help="figure title (default: the schedule's parameters)")
        else:
            c.add_argument("-o", "--output", default=None, help="a .csv or .npy file (default: CSV on stdout)")
    sub.add_parser(
        "bench",
        help="a few seconds of timings against torch and NumPy",
        description=_plain(__import__("clrfast.quickbench", fromlist=["x"]).__doc__),
        formatter_class=fmt,
    )
    return p


def main(argv=None) -> int:
    """Run the command line; returns the exit status (also used as the console script)."""
    try:
        status = _main(argv)
        # Flushed here, so that a closed pipe shows up in this try and not at interpreter exit.
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return _CLOSED_STDOUT
    return status


def _main(argv) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = None
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
        return _fail(e, 2)
    except MemoryError:
        return _fail(f"not enough memory for --steps {getattr(args, 'steps', None)}", 2)
    except BrokenPipeError:
        raise
    except OSError as e:  # any other OS error: -o is reported by _check_path and _writing
        return _fail(f"cannot write {e.filename!r}: {e.strerror or e}" if e.filename else e, 2)
    except ImportError as e:
        return _fail(e, 1)


def _discard_stdout() -> None:
    """Point stdout at devnull, as Python's docs advise on BrokenPipeError: what is still buffered
    would otherwise fail again at exit, with an "Exception ignored" message on stderr."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured, redirected in-process)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _fail(message, status: int) -> int:
    print(f"clrfast: error: {' '.join(str(message).split())}", file=sys.stderr)
    return status


def _schedule_and_steps(args):
    schedule = parse_spec(args.spec)
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.steps > 2**53:
        raise UsageError(f"--steps must be <= 2**53 (steps past it are not whole doubles), got {args.steps}")
    last = schedule.max_step
    if last is not None and args.steps - 1 > last:
        raise UsageError(f"--steps {args.steps} runs past the schedule's last step {last}")
    try:
        schedule._check_max(args.steps - 1, first=0)
    except OverflowError as e:
        raise UsageError(str(e)) from None
    return schedule, args.steps


def _cmd_plot(args) -> int:
    schedule, n = _schedule_and_steps(args)
    path = _check_path(args.output)
    from .plotting import plot, require_matplotlib, written_path

    Figure, _ = require_matplotlib()
    formats = Figure().canvas.get_supported_filetypes()
    path = written_path(path)
    ext = os.path.splitext(path)[1][1:].lower()
    if ext not in formats:
        raise UsageError(
            f"-o {args.output!r}: matplotlib cannot write .{ext} files; use one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )
    if n > 1_000_000:
        raise UsageError(f"--steps {n} is more than a plot can show; use at most 1000000 (or 'table')")
    if args.title is not None:
        _check_title(args.title)
    with _writing(path):
        plot(schedule, n, path=path, logy=args.logy, title=args.title)
    print(f"wrote {path} ({n} steps of {type(schedule).__name__})")
    return 0


def _cmd_table(args) -> int:
    schedule, n = _schedule_and_steps(args)
    out = args.output
    momentum = schedule.has_momentum
    columns = ["step", "lr", "momentum"] if momentum else ["step", "lr"]
    if out is not None and out.lower().endswith(".npy"):
        _check_path(out)
        need = n * len(columns) * 8
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(out))).free
        if need > free:
            raise UsageError(f"--steps {n} needs {need / 1e9:.3g} GB for {out!r}, {free / 1e9:.3g} GB are free")
        with _writing(out):
            arr = np.lib.format.open_memmap(out, mode="w+", dtype=np.float64, shape=(n, len(columns)))
            for first, lr, mom in _chunks(schedule, n):
                arr[first : first + len(lr), 0] = np.arange(first, first + len(lr), dtype=np.float64)
                arr[first : first + len(lr), 1] = lr
                if momentum:
                    arr[first : first + len(lr), 2] = mom
            arr.flush()
            del arr
        print(f"wrote {out}: array ({n}, {len(columns)}) of {', '.join(columns)}")
        return 0
    if out is not None and not out.lower().endswith(".csv"):
        raise UsageError(f"-o must name a .csv or .npy file, got {out!r}")
    if out is None:
        _write_csv(sys.stdout, schedule, n, columns)
        return 0
    _check_path(out)
    with _writing(out), open(out, "w", encoding="utf-8") as fh:
        _write_csv(fh, schedule, n, columns)
    print(f"wrote {out}: {n} rows of {','.join(columns)}")
    return 0


def _chunks(schedule, n):
    """(first step, lr, momentum or None) for consecutive chunks of steps."""
    for first in range(0, n, _CHUNK):
        steps = np.arange(first, min(n, first + _CHUNK), dtype=np.int64)
        yield first, schedule.lr_table(steps), schedule.momentum_table(steps)


def _write_csv(fh, schedule, n, columns) -> None:
    fh.write(",".join(columns) + "\n")
    for first, lr, mom in _chunks(schedule, n):
        steps = range(first, first + len(lr))
        if mom is None:  # repr round-trips doubles exactly
            fh.write("".join(f"{i},{a!r}\n" for i, a in zip(steps, lr.tolist())))
        else:
            fh.write(
                "".join(f"{i},{a!r},{'' if b != b else repr(b)}\n" for i, a, b in zip(steps, lr.tolist(), mom.tolist()))
            )


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


def _check_path(path: str) -> str:
    """A file path -o can create, or a usage error naming -o, the path and what the OS said."""
    if os.path.isdir(path):
        raise UsageError(f"-o {path!r} is a folder; -o must name a file")
    folder = os.path.dirname(path) or os.curdir
    try:
        # Creating a file there is the test the OS agrees with: permissions, read-only mounts,
        # /proc; free space says nothing about those.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"-o {path!r}: {_why_not_writable(folder)} ({e.strerror or e})") from None
    return path


def _why_not_writable(folder: str) -> str:
    # The nearest existing ancestor tells a missing folder from a path that runs through a file.
    ancestor = folder
    while not os.path.exists(ancestor):
        parent = os.path.dirname(ancestor)
        if parent in ("", ancestor):
            break
        ancestor = parent
    if os.path.exists(ancestor) and not os.path.isdir(ancestor):
        return f"{ancestor!r} is a file, not a folder"
    if not os.path.isdir(folder):
        return f"folder {folder!r} does not exist"
    return f"cannot create a file in folder {folder!r}"


@contextlib.contextmanager
def _writing(path: str):
    """Report an OS error while writing -o (a read-only file, a full disk) as a usage error naming it."""
    try:
        yield
    except BrokenPipeError:  # -o a FIFO whose reader left: as a closed stdout
        raise
    except OSError as e:
        raise UsageError(f"-o {path!r}: cannot write it ({e.strerror or e})") from None


def _check_title(title: str) -> None:
    """Draw --title alone first: text matplotlib cannot lay out (bad mathtext such as
    ``$\\frac{$``) fails inside savefig, with a traceback."""
    from .plotting import new_figure

    fig = new_figure(figsize=(2, 1))
    fig.text(0, 0, title, fontsize=9)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing glyph warns once, from the real plot
            fig.canvas.draw()
    except ValueError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(e).__name__
        raise UsageError(f"--title {title!r}: matplotlib cannot draw it ({reason}); write a literal $ as \\$") from None


_COMMANDS = {"plot": _cmd_plot, "table": _cmd_table, "bench": _cmd_bench, "demo": _cmd_demo}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
