"""The core package works where torch cannot be imported, and never imports it on its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class _BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked in this test ({name})")
            return None

    sys.meta_path.insert(0, _BlockTorch())
    """
)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_and_compute_without_torch():
    proc = run_python(
        """
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("the torch blocker did not work")

        import pickle

        import numpy as np

        import clrfast as clr

        s = clr.Join([clr.Warmup(0.0, 0.1, 10),
                      clr.Cyclic(1e-3, 0.1, 5, mode="triangular2", base_momentum=0.8, max_momentum=0.9)], [10])
        table = s.lr_table(30)
        assert table.dtype == np.float64 and table.shape == (30,)
        assert table[5] == 0.05 and table[10] == 1e-3 and table[15] == 0.1, table
        assert s.momentum_table(np.array([15]))[0] == 0.8
        assert clr.from_dict(s.to_dict()) == s and pickle.loads(pickle.dumps(s)) == s
        assert clr.OneCycle(0.1, 100).lr(30 - 1) == 0.1
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_torch_front_end_reports_missing_torch_clearly():
    proc = run_python(
        """
        import clrfast

        try:
            from clrfast.torch import CyclicLR  # noqa: F401
        except ImportError as e:
            print("ImportError:", e)
        else:
            raise SystemExit("clrfast.torch.CyclicLR resolved without torch")
        assert clrfast.Constant(0.1).lr(3) == 0.1  # the core still works after the failed import
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ImportError:") and "torch" in proc.stdout
