"""Schedules written on the command line: ``POLICY key=value ...`` or a JSON file from ``to_dict()``.

    parse_spec("triangular2 base_lr=1e-3 max_lr=6e-3 step_size_up=2000")
    == Cyclic(base_lr=1e-3, max_lr=6e-3, step_size_up=2000, mode="triangular2")

The first word names the policy, the rest are the schedule constructor's
keyword arguments. Values are read as int, float, bool (``true``/``false``),
``none`` or, failing those, a string.
"""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap

from .schedules import (
    Constant,
    CosineHardRestarts,
    CosineRestarts,
    Cyclic,
    InverseSqrt,
    OneCycle,
    PolynomialDecay,
    RangeSweep,
    Schedule,
    Warmup,
    WarmupCosine,
    WarmupLinear,
    WarmupStableDecay,
    from_dict,
)


class SpecError(ValueError):
    """A schedule spec that cannot be turned into a schedule (one line of explanation)."""


# policy -> (class, preset arguments, one-line summary)
POLICIES = {
    "triangular": (Cyclic, {"mode": "triangular"}, "cyclic LR, every cycle full height (Smith 2017)"),
    "triangular2": (Cyclic, {"mode": "triangular2"}, "cyclic LR, the height halves every cycle"),
    "exp_range": (Cyclic, {"mode": "exp_range"}, "cyclic LR, the height decays as gamma**step"),
    "cyclic": (Cyclic, {}, "cyclic LR with every option (mode, window, scale_mode, momentum)"),
    "onecycle": (OneCycle, {}, "one-cycle policy (Smith 2018), as torch's OneCycleLR"),
    "cosine": (CosineRestarts, {}, "cosine annealing with warm restarts (SGDR)"),
    "warmup": (Warmup, {}, "linear warmup from start_lr to end_lr, then constant"),
    "constant": (Constant, {}, "a fixed learning rate"),
    "sweep": (RangeSweep, {}, "LR range-test sweep, exp or linear"),
    "wsd": (WarmupStableDecay, {}, "warmup-stable-decay: linear/cosine/1-sqrt warmup and decay"),
    "warmup_linear": (WarmupLinear, {}, "linear warmup, then linear decay to 0 at total_steps"),
    "warmup_cosine": (WarmupCosine, {}, "linear warmup, then cosine to a floor (min_lr or min_lr_rate)"),
    "hard_restarts": (CosineHardRestarts, {}, "linear warmup, then num_cycles cosines with hard restarts"),
    "polynomial": (PolynomialDecay, {}, "linear warmup, then polynomial decay to lr_end"),
    "inverse_sqrt": (InverseSqrt, {}, "linear warmup, then lr*sqrt(timescale/(t - warmup + timescale))"),
}

# Spec keys that differ from the dataclass field names.
_ALIASES = {Constant: {"lr": "lr_value"}}
# Fields that take a whole number: accept 1e4 as well as 10000.
_INT_FIELDS = {"total_steps", "T_0", "warmup_steps", "num_steps", "stable_steps", "decay_steps"}


def parse_value(text: str):
    """``"3"`` -> 3, ``"1e-3"`` -> 0.001, ``"true"`` -> True, ``"none"`` -> None, else the string."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _fields(cls):
    return [f for f in dataclasses.fields(cls) if f.name != "scale_fn"]


def _public_name(cls, field: str) -> str:
    for alias, name in _ALIASES.get(cls, {}).items():
        if name == field:
            return alias
    return field


def _field_default(f) -> str | None:
    if f.default is dataclasses.MISSING:
        return None
    if f.default is None:
        return "none"
    if isinstance(f.default, bool):
        return str(f.default).lower()
    return str(f.default)


def parse_spec(spec) -> Schedule:
    """A schedule from a spec: a string or token list ``POLICY key=value ...``, or a JSON file path.

    Raises :class:`SpecError` (a ValueError) with one line of explanation.
    """
    if isinstance(spec, str):
        tokens = spec.split()
    else:
        tokens = [w for tok in spec for w in str(tok).split()]
    if not tokens:
        raise SpecError("empty schedule spec; expected 'POLICY key=value ...' or a JSON file")
    head = tokens[0]
    if len(tokens) == 1 and (head.lower().endswith(".json") or os.path.isfile(head)):
        return _load_json(head)
    policy = head.lower()
    if policy not in POLICIES:
        raise SpecError(f"unknown policy {head!r}; choose one of: {', '.join(POLICIES)} (or a JSON file)")
    cls, preset, _ = POLICIES[policy]
    names = {_public_name(cls, f.name): f.name for f in _fields(cls)}
    kwargs = dict(preset)
    seen = set()
    for tok in tokens[1:]:
        key, sep, raw = tok.partition("=")
        if not sep or not key:
            raise SpecError(f"expected key=value after the policy, got {tok!r}")
        field = names.get(key)
        if field is None:
            raise SpecError(f"{policy} has no parameter {key!r}; its parameters: {', '.join(names)}")
        if key in seen:
            raise SpecError(f"{key} is given twice")
        seen.add(key)
        if field in preset:
            raise SpecError(f"{policy} fixes {key}={preset[field]!r}; use 'cyclic' to choose {key}")
        value = parse_value(raw)
        if field in _INT_FIELDS and isinstance(value, float) and value.is_integer():
            value = int(value)
        kwargs[field] = value
    missing = [
        _public_name(cls, f.name) for f in _fields(cls) if f.default is dataclasses.MISSING and f.name not in kwargs
    ]
    if missing:
        raise SpecError(f"{policy} needs {', '.join(m + '=...' for m in missing)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, OverflowError) as e:
        raise SpecError(f"{policy}: {_one_line(e)}") from None


# A schedule file is small; a larger one is not a schedule (and is not read whole).
_MAX_JSON_BYTES = 1 << 20


def _no_duplicates(pairs):
    """object_pairs_hook refusing a key given twice, in time linear in the keys: a 1 MiB file
    holds ~100,000 of them, which a check per key against all the others takes minutes over."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise SpecError(f"key {key!r} appears twice in one object")
            seen.add(key)
    return obj


def _load_json(path: str) -> Schedule:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_JSON_BYTES + 1)
    except OSError as e:
        raise SpecError(f"cannot read schedule file {path!r}: {e.strerror or e}") from None
    if len(raw) > _MAX_JSON_BYTES:
        raise SpecError(f"{path!r} is larger than {_MAX_JSON_BYTES} bytes; a schedule file is a few hundred")
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as e:
        raise SpecError(f"{path!r} is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"{path!r} is not valid JSON: {e.msg} at line {e.lineno}") from None
    except RecursionError:
        raise SpecError(f"{path!r} is nested too deeply to be a schedule") from None
    except SpecError as e:
        raise SpecError(f"{path!r}: {e}") from None
    try:
        return from_dict(data)
    except (TypeError, ValueError, KeyError, OverflowError, RecursionError) as e:
        raise SpecError(f"{path!r} is not a clrfast schedule: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def policies_help() -> str:
    """Every policy with its parameters and defaults, for ``--help``."""
    lines = ["schedule SPEC: POLICY key=value ... (or a JSON file written from to_dict())", ""]
    for policy, (cls, preset, summary) in POLICIES.items():
        lines.append(f"  {policy:<12} {summary}")
        parts = []
        for f in _fields(cls):
            if f.name in preset:
                continue
            default = _field_default(f)
            name = _public_name(cls, f.name)
            parts.append(name if default is None else f"{name}={default}")
        lines += textwrap.wrap(" ".join(parts), width=96, initial_indent=" " * 6, subsequent_indent=" " * 6)
    lines += [
        "",
        "  values: ints, floats (1e-3), true/false, none, or words (mode=exp_range);",
        "  parameters without a default are required. Examples:",
        "    clrfast plot triangular2 base_lr=1e-3 max_lr=6e-3 step_size_up=2000 --steps 10000 -o lr.png",
        "    clrfast table onecycle max_lr=0.1 total_steps=1000 --steps 1000 -o onecycle.csv",
        "    clrfast plot wsd peak_lr=3e-4 warmup_steps=200 stable_steps=1400 decay_steps=400 decay_type=1-sqrt "
        "--steps 2000",
    ]
    return "\n".join(lines)
