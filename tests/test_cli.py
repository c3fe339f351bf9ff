"""The clrfast command: schedule specs, table, plot, bench, help and errors (exit code 2, one line)."""

import json
import math
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
@pytest.mark.parametrize("text, expect", [
    ("triangular base_lr=1e-3 max_lr=6e-3 step_size_up=2000", clr.Cyclic(1e-3, 6e-3, 2000)),
    ("triangular2 base_lr=0.001 max_lr=0.006 step_size_up=500",
     clr.Cyclic(1e-3, 6e-3, 500, mode="triangular2")),
    ("exp_range base_lr=1e-3 max_lr=6e-3 step_size_up=50 gamma=0.999",
     clr.Cyclic(1e-3, 6e-3, 50, mode="exp_range", gamma=0.999)),
    ("cyclic base_lr=1e-3 max_lr=6e-3 mode=triangular2 window=hann base_momentum=0.8 max_momentum=0.9",
     clr.Cyclic(1e-3, 6e-3, mode="triangular2", window="hann", base_momentum=0.8, max_momentum=0.9)),
    ("onecycle max_lr=0.1 total_steps=1e4 three_phase=true anneal=linear",
     clr.OneCycle(0.1, 10000, three_phase=True, anneal="linear")),
    ("cosine base_lr=0.1 T_0=100 T_mult=2 eta_min=1e-4", clr.CosineRestarts(0.1, 100, T_mult=2, eta_min=1e-4)),
    ("warmup start_lr=0 end_lr=0.1 warmup_steps=500", clr.Warmup(0, 0.1, 500)),
    ("constant lr=0.05", clr.Constant(0.05)),
    ("sweep start_lr=1e-7 end_lr=10 num_steps=100 mode=linear", clr.RangeSweep(1e-7, 10, 100, "linear")),
    ("  TRIANGULAR   base_lr=1   max_lr=2 ", clr.Cyclic(1, 2)),
])
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


@pytest.mark.parametrize("text, match", [
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
])
def test_bad_specs(text, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(text)
    assert issubclass(SpecError, ValueError)


# ----------------------------------------------------------------------------- table
def test_table_csv_on_stdout_matches_an_independent_formula(capsys):
    rc, out, err = run(capsys, "table", "triangular", "base_lr=0.1", "max_lr=1.0", "step_size_up=5",
                       "--steps", "23")
    assert rc == 0 and err == ""
    lines = out.strip().splitlines()
    assert lines[0] == "step,lr,momentum" and len(lines) == 24
    for t, line in enumerate(lines[1:]):
        step, lr, mom = line.split(",")
        assert int(step) == t and mom == ""
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
    # No momentum: NaN column in .npy.
    assert run(capsys, "table", "constant", "lr=0.5", "--steps", "3", "-o", str(npy))[0] == 0
    arr = np.load(npy)
    assert (arr[:, 1] == 0.5).all() and np.isnan(arr[:, 2]).all()


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
    rc, out, err = run(capsys, "plot", "triangular2", "base_lr=1e-3", "max_lr=6e-3", "step_size_up=200",
                       "--steps", "1000", "-o", str(path), "--logy")
    assert rc == 0 and err == "" and str(path) in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("argv, match", [
    (["table", "sgdr", "base_lr=1", "--steps", "3"], "unknown policy 'sgdr'"),
    (["plot", "triangular", "base_lr=x", "max_lr=1", "--steps", "3"], "base_lr must be a real number"),
    (["table", "onecycle", "max_lr=0.1", "total_steps=10", "--steps", "20"],
     "--steps 20 runs past the schedule's last step 10"),
    (["table", "constant", "lr=0.1", "--steps", "0"], "--steps must be >= 1"),
    (["table", "constant", "lr=0.1", "--steps", "3", "-o", "out.txt"], "-o must name a .csv or .npy file"),
    (["table", "constant", "lr=0.1", "--steps", "3", "-o", "no/such/dir/t.csv"], "does not exist"),
    (["table", "no-such-file.json", "--steps", "3"], "cannot read schedule file 'no-such-file.json'"),
    (["table", "constant", "lr=0.1"], "the following arguments are required: --steps"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["demo", "--iterations", "1"], "--iterations must be >="),
])
def test_errors_are_one_line_and_exit_2(capsys, argv, match):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("clrfast: error: ") and match in err


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
        assert f"  {command} " in out
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


def test_bench_table_row_is_timed_for_real():
    case, _, ours, peer_name, peer = quickbench.row_table()
    assert case == "Cyclic.lr_table(1e6)" and peer_name == "NumPy formula"
    assert ours > 0 and peer > 0


# ----------------------------------------------------------------------------- python -m clrfast
def test_python_dash_m(tmp_path):
    out = tmp_path / "t.csv"
    proc = subprocess.run([sys.executable, "-m", "clrfast", "table", "cosine", "base_lr=0.1", "T_0=4",
                           "--steps", "5", "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = np.loadtxt(out, delimiter=",", skiprows=1, usecols=(0, 1))
    expect = [0.1 * (1 + math.cos(math.pi * (t % 4) / 4)) / 2 for t in range(5)]
    np.testing.assert_allclose(rows[:, 1], expect, rtol=1e-14, atol=1e-18)
    proc = subprocess.run([sys.executable, "-m", "clrfast", "table", "sgdr", "--steps", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("clrfast: error: unknown policy 'sgdr'")
    assert proc.stderr.count("\n") == 1
