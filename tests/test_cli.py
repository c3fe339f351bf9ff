"""The clrfast command: schedule specs, table, plot, bench, help and errors (exit code 2, one line)."""

import errno
import itertools
import json
import math
import os
import shlex
import shutil
import string
import subprocess
import sys

import clrfast as clr
import numpy as np
import pytest
from clrfast import quickbench
from clrfast._spec import POLICIES, SpecError, parse_spec, parse_value
from clrfast.cli import main


def triangular(t, base, top, step):
    # The Keras/TF-Addons form, independent of the core's formula.
    cycle = math.floor(1 + t / (2 * step))
    return base + (top - base) * max(0.0, 1 - abs(t / step - 2 * cycle + 1))


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- specs
@pytest.mark.parametrize(
    "text, expect",
    [
        ("triangular base_lr=1e-3 max_lr=6e-3 step_size_up=2000", clr.Cyclic(1e-3, 6e-3, 2000)),
        ("triangular2 base_lr=0.001 max_lr=0.006 step_size_up=500", clr.Cyclic(1e-3, 6e-3, 500, mode="triangular2")),
        (
            "exp_range base_lr=1e-3 max_lr=6e-3 step_size_up=50 gamma=0.999",
            clr.Cyclic(1e-3, 6e-3, 50, mode="exp_range", gamma=0.999),
        ),
        (
            "cyclic base_lr=1e-3 max_lr=6e-3 mode=triangular2 window=hann base_momentum=0.8 max_momentum=0.9",
            clr.Cyclic(1e-3, 6e-3, mode="triangular2", window="hann", base_momentum=0.8, max_momentum=0.9),
        ),
        (
            "onecycle max_lr=0.1 total_steps=1e4 three_phase=true anneal=linear",
            clr.OneCycle(0.1, 10000, three_phase=True, anneal="linear"),
        ),
        ("cosine base_lr=0.1 T_0=100 T_mult=2 eta_min=1e-4", clr.CosineRestarts(0.1, 100, T_mult=2, eta_min=1e-4)),
        ("warmup start_lr=0 end_lr=0.1 warmup_steps=500", clr.Warmup(0, 0.1, 500)),
        ("constant lr=0.05", clr.Constant(0.05)),
        ("sweep start_lr=1e-7 end_lr=10 num_steps=100 mode=linear", clr.RangeSweep(1e-7, 10, 100, "linear")),
        ("  TRIANGULAR   base_lr=1   max_lr=2 ", clr.Cyclic(1, 2)),
    ],
)
def test_parse_spec(text, expect):
    got = parse_spec(text)
    assert got == expect and type(got) is type(expect)
    assert parse_spec(text.split()) == expect  # token list, as argparse hands it over


def test_parse_value():
    assert parse_value("3") == 3 and type(parse_value("3")) is int
    assert parse_value("1e-3") == 0.001 and parse_value("-2.5") == -2.5
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("none") is None
    assert parse_value("exp_range") == "exp_range"


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty schedule spec"),
        ("sgdr base_lr=1", "unknown policy 'sgdr'; choose one of: triangular, "),
        ("triangular base_lr=1 max_lr=2 lr=3", "triangular has no parameter 'lr'; its parameters: base_lr, max_lr"),
        ("triangular base_lr=1 max_lr", "expected key=value after the policy, got 'max_lr'"),
        ("triangular base_lr=1", "triangular needs max_lr=..."),
        ("onecycle", "onecycle needs max_lr=..., total_steps=..."),
        ("triangular base_lr=1 max_lr=2 mode=exp_range", "triangular fixes mode='triangular'; use 'cyclic'"),
        ("triangular base_lr=abc max_lr=2", "triangular: base_lr must be a real number, got 'abc'"),
        ("onecycle max_lr=0.1 total_steps=10.5", "onecycle: total_steps must be an integer"),
        ("cosine base_lr=0.1 T_0=0", "cosine: T_0 must be >= 1, got 0"),
    ],
)
def test_bad_specs(text, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(text)
    assert issubclass(SpecError, ValueError)


# ----------------------------------------------------------------------------- table
def test_table_csv_on_stdout_matches_an_independent_formula(capsys):
    rc, out, err = run(capsys, "table", "triangular", "base_lr=0.1", "max_lr=1.0", "step_size_up=5", "--steps", "23")
    assert rc == 0 and err == ""
    lines = out.strip().splitlines()
    assert lines[0] == "step,lr" and len(lines) == 24  # no momentum column without a momentum
    for t, line in enumerate(lines[1:]):
        step, lr = line.split(",")
        assert int(step) == t
        assert float(lr) == pytest.approx(triangular(t, 0.1, 1.0, 5), rel=1e-14)


def test_table_to_csv_and_npy_files(capsys, tmp_path):
    spec = ["onecycle", "max_lr=0.1", "total_steps=100"]
    s = clr.OneCycle(0.1, 100)
    csv = tmp_path / "t.csv"
    rc, out, _ = run(capsys, "table", *spec, "--steps", "100", "-o", str(csv))
    assert rc == 0 and "wrote" in out
    rows = np.loadtxt(csv, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(rows[:, 0], np.arange(100))
    np.testing.assert_array_equal(rows[:, 1], s.lr_table(100))  # repr round-trips doubles exactly
    np.testing.assert_array_equal(rows[:, 2], s.momentum_table(100))
    npy = tmp_path / "t.npy"
    assert run(capsys, "table", *spec, "--steps", "100", "-o", str(npy))[0] == 0
    arr = np.load(npy)
    assert arr.shape == (100, 3)
    np.testing.assert_array_equal(arr[:, 1], s.lr_table(100))
    np.testing.assert_array_equal(arr[:, 2], s.momentum_table(100))
    # No momentum: no momentum column.
    rc, out, _ = run(capsys, "table", "constant", "lr=0.5", "--steps", "3", "-o", str(npy))
    assert rc == 0 and "(3, 2) of step, lr" in out
    arr = np.load(npy)
    assert arr.shape == (3, 2) and (arr[:, 1] == 0.5).all()


def test_tables_are_written_in_chunks_and_equal_the_whole_table(capsys, tmp_path, monkeypatch):
    from clrfast import cli

    monkeypatch.setattr(cli, "_CHUNK", 7)  # many chunks, one of them partial
    s = clr.Cyclic(1e-3, 6e-3, 5, base_momentum=0.8, max_momentum=0.9)
    spec = ["cyclic", "base_lr=1e-3", "max_lr=6e-3", "step_size_up=5", "base_momentum=0.8", "max_momentum=0.9"]
    rc, out, _ = run(capsys, "table", *spec, "--steps", "50")
    rows = np.array([[float(x) for x in line.split(",")] for line in out.strip().splitlines()[1:]])
    np.testing.assert_array_equal(rows[:, 1], s.lr_table(50))
    np.testing.assert_array_equal(rows[:, 2], s.momentum_table(50))
    npy = tmp_path / "t.npy"
    assert run(capsys, "table", *spec, "--steps", "50", "-o", str(npy))[0] == 0
    np.testing.assert_array_equal(np.load(npy)[:, 1:], np.column_stack([s.lr_table(50), s.momentum_table(50)]))


def test_json_spec_from_to_dict(capsys, tmp_path):
    s = clr.Join([clr.Warmup(0.0, 0.1, 10), clr.CosineRestarts(0.1, T_0=20)], boundaries=[10])
    path = tmp_path / "sched.json"
    path.write_text(json.dumps(s.to_dict()))
    rc, out, _ = run(capsys, "table", str(path), "--steps", "40")
    assert rc == 0
    lrs = [float(line.split(",")[1]) for line in out.strip().splitlines()[1:]]
    np.testing.assert_array_equal(lrs, s.lr_table(40))
    assert lrs[5] == pytest.approx(0.05, rel=1e-14)


# ----------------------------------------------------------------------------- plot
def test_plot_command_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "lr.png"
    rc, out, err = run(
        capsys,
        "plot",
        "triangular2",
        "base_lr=1e-3",
        "max_lr=6e-3",
        "step_size_up=200",
        "--steps",
        "1000",
        "-o",
        str(path),
        "--logy",
    )
    assert rc == 0 and err == "" and str(path) in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bare = tmp_path / "lr"  # matplotlib adds .png: the message names the file written
    rc, out, _ = run(capsys, "plot", "constant", "lr=0.1", "--steps", "3", "-o", str(bare))
    assert rc == 0 and f"wrote {bare}.png " in out and (tmp_path / "lr.png").exists()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "argv, match",
    [
        (["table", "sgdr", "base_lr=1", "--steps", "3"], "unknown policy 'sgdr'"),
        (["plot", "triangular", "base_lr=x", "max_lr=1", "--steps", "3"], "base_lr must be a real number"),
        (
            ["table", "onecycle", "max_lr=0.1", "total_steps=10", "--steps", "20"],
            "--steps 20 runs past the schedule's last step 10",
        ),
        (["table", "constant", "lr=0.1", "--steps", "0"], "--steps must be >= 1"),
        (["table", "constant", "lr=0.1", "--steps", "3", "-o", "out.txt"], "-o must name a .csv or .npy file"),
        (["table", "constant", "lr=0.1", "--steps", "3", "-o", "no/such/dir/t.csv"], "does not exist"),
        (["table", "no-such-file.json", "--steps", "3"], "cannot read schedule file 'no-such-file.json'"),
        (["table", "constant", "lr=0.1"], "the following arguments are required: --steps"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["demo", "--iterations", "1"], "--iterations must be >="),
        (["table", "constant", "lr=0.1", "--steps", str(2**62)], "--steps must be <= 2**53"),
        (["table", "constant", "lr=0.1", "--steps", "2.5"], "whole number"),
        (["table", "constant", "lr=0.1", "lr=0.2", "--steps", "3"], "lr is given twice"),
        (
            ["table", "onecycle", "max_lr=0.1", "total_steps=10", "three_phase=maybe", "--steps", "3"],
            "three_phase must be True or False",
        ),
        (
            ["table", "exp_range", "base_lr=1e-3", "max_lr=6e-3", "step_size_up=10", "gamma=2", "--steps", "2000"],
            "no finite value at step 1024",
        ),
        (["table", "constant", "lr=0.1", "--steps", "3", "-o", "/proc/clrfast-no-such/x.csv"], "does not exist"),
        (["plot", "constant", "lr=0.1", "--steps", "3", "-o", "x.weird"], "cannot write .weird files"),
    ],
)
def test_errors_are_one_line_and_exit_2(capsys, argv, match):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("clrfast: error: ") and match in err


def test_unwritable_paths_are_one_line_errors(capsys, tmp_path):
    folder = tmp_path / "adir.csv"
    folder.mkdir()
    rc, out, err = run(capsys, "table", "constant", "lr=0.1", "--steps", "3", "-o", str(folder))
    assert rc == 2 and out == "" and "is a folder" in err and err.count("\n") == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc, out, err = run(capsys, "table", "constant", "lr=0.1", "--steps", "3", "-o", str(blocker / "x.csv"))
    assert rc == 2 and out == "" and err.count("\n") == 1


TO_FILE = {  # command line writing to -o, by the extension it writes
    "csv": ["table", "constant", "lr=0.1", "--steps", "3"],
    "npy": ["table", "constant", "lr=0.1", "--steps", "3"],
    "png": ["plot", "constant", "lr=0.1", "--steps", "3"],
}


@pytest.mark.parametrize("ext", list(TO_FILE))
def test_an_unwritable_o_says_why_naming_o_the_path_and_the_os_error(capsys, tmp_path, ext):
    if ext == "png":
        pytest.importorskip("matplotlib")
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (tmp_path / "missing" / f"x.{ext}", f"folder {str(tmp_path / 'missing')!r} does not exist", errno.ENOENT),
        (tmp_path / "a" / "b" / f"x.{ext}", f"folder {str(tmp_path / 'a' / 'b')!r} does not exist", errno.ENOENT),
        (blocker / f"x.{ext}", f"{str(blocker)!r} is a file, not a folder", errno.ENOTDIR),
        (blocker / "sub" / f"x.{ext}", f"{str(blocker)!r} is a file, not a folder", errno.ENOTDIR),
    ]
    for path, why, code in cases:
        rc, out, err = run(capsys, *TO_FILE[ext], "-o", str(path))
        assert (rc, out) == (2, ""), path
        assert err == f"clrfast: error: -o {str(path)!r}: {why} ({os.strerror(code)})\n"
    assert blocker.read_text() == ""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_folder_no_file_can_be_made_in_is_not_called_full(capsys):
    # /proc reports 0 bytes free; what stops the write is that it holds no files.
    rc, out, err = run(capsys, *TO_FILE["npy"], "-o", "/proc/clrfast-test.npy")
    assert (rc, out) == (2, "")
    assert err == (
        f"clrfast: error: -o '/proc/clrfast-test.npy': cannot create a file in folder '/proc' "
        f"({os.strerror(errno.ENOENT)})\n"
    )


def _without_root():
    """A command prefix under which file permissions hold: root writes into a read-only folder."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    prefix = [shutil.which("setpriv") or "setpriv", "--bounding-set", caps, "--inh-caps", caps]
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
    except OSError:
        ok = False
    if not ok:
        pytest.skip("running as root, and setpriv cannot drop the capability to write anywhere")
    return prefix


def test_read_only_folder_and_file_are_reported_as_permission_errors(tmp_path):
    pytest.importorskip("matplotlib")
    prefix = _without_root()
    folder = tmp_path / "ro"
    folder.mkdir()
    ro_file = tmp_path / "ro_file"
    ro_file.mkdir()
    for f in ("x.csv", "x.npy", "x.png"):
        (ro_file / f).write_text("keep")
        (ro_file / f).chmod(0o444)
    folder.chmod(0o555)
    try:
        for ext, argv in TO_FILE.items():
            path = folder / f"x.{ext}"
            proc = subprocess.run(
                [*prefix, sys.executable, "-m", "clrfast", *argv, "-o", str(path)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
            assert proc.stderr == (
                f"clrfast: error: -o {str(path)!r}: cannot create a file in folder "
                f"{str(folder)!r} ({os.strerror(errno.EACCES)})\n"
            )
            path = ro_file / f"x.{ext}"
            proc = subprocess.run(
                [*prefix, sys.executable, "-m", "clrfast", *argv, "-o", str(path)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
            assert proc.stderr == f"clrfast: error: -o {str(path)!r}: cannot write it ({os.strerror(errno.EACCES)})\n"
            assert path.read_text() == "keep"
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


def test_a_closed_stdout_ends_quietly_with_status_141():
    cmd = [sys.executable, "-m", "clrfast", "table", "constant", "lr=0.1", "--steps", "1e6"]  # ~8 MB of CSV
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"step,lr\n"
    proc.stdout.close()  # as head does after its lines: the rest meets a closed pipe
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141 and err == b""
    if shutil.which("bash") and shutil.which("head"):
        line = " ".join(map(shlex.quote, cmd))
        sh = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {line} | head -n 3"], capture_output=True, text=True, timeout=120
        )
        assert (sh.returncode, sh.stdout, sh.stderr) == (141, "step,lr\n0,0.1\n1,0.1\n", "")


def test_a_closed_stdout_in_process_returns_141(monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["table", "constant", "lr=0.1", "--steps", "3"]) == 141
    assert capsys.readouterr().err == ""


def test_a_title_matplotlib_cannot_draw_is_a_usage_error(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "lr.png"
    for title in ("$\\frac{$", "$\\nosuchcommand$", "$x^$"):
        rc, out, err = run(capsys, "plot", "constant", "lr=0.1", "--steps", "3", "-o", str(path), "--title", title)
        assert (rc, out) == (2, ""), title
        assert (
            err.startswith(f"clrfast: error: --title {title!r}: matplotlib cannot draw it (")
            and err.endswith("; write a literal $ as \\$\n")
            and err.count("\n") == 1
        ), err
        assert not path.exists()
    # Mathtext it can draw, and an escaped dollar, are titles like any other.
    for title in ("$\\frac{1}{2}$ of $\\eta_{max}$", "costs \\$5"):
        rc, out, err = run(capsys, "plot", "constant", "lr=0.1", "--steps", "3", "-o", str(path), "--title", title)
        assert rc == 0 and err == "" and path.read_bytes()[:4] == b"\x89PNG", title
        path.unlink()


def _keys(n):
    """n distinct short keys: 100,000 of them fit a schedule file's 1 MiB."""
    alphabet = string.ascii_lowercase + string.digits
    keys = ("".join(p) for size in itertools.count(1) for p in itertools.product(alphabet, repeat=size))
    return list(itertools.islice(keys, n))


@pytest.mark.parametrize("duplicate", [True, False])
def test_a_json_object_of_100000_keys_is_rejected_quickly(capsys, tmp_path, duplicate):
    keys = _keys(100_000)
    if duplicate:
        keys[-1] = keys[-2]  # found last by a check that walks the keys in order
    params = ",".join(f'"{k}":0' for k in keys)
    path = tmp_path / "many.json"
    path.write_text('{"clrfast_schedule": 1, "type": "Constant", "params": {' + params + "}}")
    assert path.stat().st_size < 1 << 20  # under the size limit: the key check is what answers
    rc, out, err = run(capsys, "table", str(path), "--steps", "3")
    assert (rc, out) == (2, "") and err.count("\n") == 1
    if duplicate:
        assert err == f"clrfast: error: {str(path)!r}: key {keys[-1]!r} appears twice in one object\n"
    else:
        assert err.startswith(f"clrfast: error: {str(path)!r} is not a clrfast schedule: ")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\xff\xfe{}", "is not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (
            b'{"clrfast_schedule": 1, "type": "Constant", "params": {"lr_value": 0.1, "lr_value": 0.2}}',
            "key 'lr_value' appears twice",
        ),
        (b'{"clrfast_schedule": 1, "type": "Constant", "params": null}', "params must be a dict"),
        (
            b'{"clrfast_schedule": 1, "type": "OneCycle", "params": {"max_lr": 0.1, "total_steps": 10, '
            b'"three_phase": "false"}}',
            "three_phase must be True or False",
        ),
    ],
)
def test_hostile_json_files(capsys, tmp_path, content, match):
    path = tmp_path / "s.json"
    path.write_bytes(content)
    rc, out, err = run(capsys, "table", str(path), "--steps", "3")
    assert rc == 2 and out == "" and match in err and err.count("\n") == 1


def test_bad_json_file(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    rc, _, err = run(capsys, "table", str(bad), "--steps", "3")
    assert rc == 2 and "is not valid JSON" in err and err.count("\n") == 1
    bad.write_text(json.dumps({"clrfast_schedule": 1, "type": "Nope", "params": {}}))
    rc, _, err = run(capsys, "table", str(bad), "--steps", "3")
    assert rc == 2 and "is not a clrfast schedule: unknown schedule type 'Nope'" in err


# ----------------------------------------------------------------------------- help
def test_help_documents_every_policy_and_parameter(capsys):
    import dataclasses

    from clrfast._spec import _public_name

    for argv in (["--help"], ["plot", "--help"], ["table", "--help"]):
        rc, out, _ = run(capsys, *argv)
        assert rc == 0
        for policy, (cls, preset, _) in POLICIES.items():
            assert f"  {policy} " in out
            for f in dataclasses.fields(cls):
                if f.name != "scale_fn" and f.name not in preset:
                    assert _public_name(cls, f.name) in out, (policy, f.name)
    rc, out, _ = run(capsys, "--help")
    for command in ("demo", "plot", "table", "bench"):
        assert out.count(f"    {command} ") == 1, command  # listed once
    rc, out, _ = run(capsys, "demo", "--help")
    assert rc == 0 and "``" not in out and ":func:" not in out
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.strip() == f"clrfast {clr.__version__}"
    rc, out, _ = run(capsys)
    assert rc == 0 and "usage: clrfast" in out


# ----------------------------------------------------------------------------- bench
def test_bench_prints_ratios_and_n_a_for_missing_pieces(capsys, monkeypatch):
    def row_fake():
        return "fake case", "per call", 2e-6, "peer", 6e-6

    def row_missing():
        raise ImportError("no module named 'somepeer'")

    monkeypatch.setattr(quickbench, "ROWS", [row_fake, row_missing])
    rc, out, _ = run(capsys, "bench")
    assert rc == 0
    fake = next(line for line in out.splitlines() if line.startswith("fake case"))
    assert fake.split()[-1] == "3.00x" and "2.00 µs" in fake and "6.00 µs" in fake
    assert "missing" in out and "n/a (ImportError: no module named 'somepeer')" in out


def test_bench_rows_are_labelled_when_they_cannot_run(capsys, monkeypatch):
    def row_cyclic():
        raise ModuleNotFoundError("No module named 'torch'")

    monkeypatch.setattr(quickbench, "ROWS", [row_cyclic])
    rc, out, _ = run(capsys, "bench")
    assert rc == 0 and "CyclicLR.step()" in out and "row_" not in out and " cyclic " not in out


# ----------------------------------------------------------------------------- python -m clrfast
def test_python_dash_m(tmp_path):
    out = tmp_path / "t.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "clrfast", "table", "cosine", "base_lr=0.1", "T_0=4", "--steps", "5", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = np.loadtxt(out, delimiter=",", skiprows=1, usecols=(0, 1))
    expect = [0.1 * (1 + math.cos(math.pi * (t % 4) / 4)) / 2 for t in range(5)]
    np.testing.assert_allclose(rows[:, 1], expect, rtol=1e-14, atol=1e-18)
    proc = subprocess.run(
        [sys.executable, "-m", "clrfast", "table", "sgdr", "--steps", "3"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stderr.startswith("clrfast: error: unknown policy 'sgdr'")
    assert proc.stderr.count("\n") == 1


# ----------------------------------------------------------------------------- properties
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_lrs = st.floats(1e-6, 10.0, allow_nan=False)
_specs = st.one_of(
    st.builds(
        lambda b, m, up, mode: (
            f"{mode} base_lr={b!r} max_lr={m!r} step_size_up={up}",
            clr.Cyclic(b, m, up, mode=mode),
        ),
        _lrs,
        _lrs,
        st.integers(1, 50),
        st.sampled_from(["triangular", "triangular2"]),
    ),
    st.builds(
        lambda m, n, p: (f"onecycle max_lr={m!r} total_steps={n} pct_start={p!r}", (m, n, p)),
        _lrs,
        st.integers(10, 200),
        st.sampled_from([0.25, 0.3, 0.45]),
    ),
    st.builds(
        lambda b, t0, mult: (f"cosine base_lr={b!r} T_0={t0} T_mult={mult}", clr.CosineRestarts(b, t0, mult)),
        _lrs,
        st.integers(1, 30),
        st.integers(1, 3),
    ),
    st.builds(
        lambda a, b, n: (f"warmup start_lr={a!r} end_lr={b!r} warmup_steps={n}", clr.Warmup(a, b, n)),
        _lrs,
        _lrs,
        st.integers(1, 40),
    ),
    st.builds(lambda a: (f"constant lr={a!r}", clr.Constant(a)), _lrs),
)


@settings(max_examples=40, deadline=None)
@given(_specs, st.integers(1, 60))
def test_random_valid_specs_round_trip_through_table(spec, steps):
    text, expect = spec
    if isinstance(expect, tuple):
        expect = clr.OneCycle(*expect)
        steps = min(steps, expect.max_step + 1)
    proc_out = _run_main(["table", *text.split(), "--steps", str(steps)])
    rc, out, err = proc_out
    assert rc == 0 and err == "", err
    rows = [line.split(",") for line in out.strip().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == list(range(steps))
    assert [float(r[1]) for r in rows] == expect.lr_table(steps).tolist()
    if expect.has_momentum:
        assert [float(r[2]) for r in rows] == expect.momentum_table(steps).tolist()


_bad_tokens = st.one_of(
    st.sampled_from(
        [
            "base_lr=-1",
            "max_lr=nan",
            "step_size_up=0",
            "mode=bogus",
            "lr=inf",
            "T_0=0",
            "total_steps=-3",
            "three_phase=2",
            "=1",
            "x",
            "warmup_steps=1.5",
            "gamma=0",
        ]
    ),
    # Not an option: "-h" is a valid command line.
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12).filter(
        lambda s: not s.lstrip().startswith("-")
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["triangular", "onecycle", "cosine", "warmup", "constant", "sweep", "nope"]),
    st.lists(_bad_tokens, min_size=1, max_size=3),
)
def test_random_invalid_specs_exit_2_with_one_line(policy, tokens):
    spec = [policy, *tokens]
    try:
        parse_spec(spec)
    except SpecError:
        pass
    else:
        return  # by chance a valid spec (a token the policy accepts)
    rc, out, err = _run_main(["table", *spec, "--steps", "3"])
    assert rc == 2 and out == ""
    assert err.startswith("clrfast: error: ") and err.count("\n") == 1


def _run_main(argv):
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()
