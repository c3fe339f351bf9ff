"""The vector square root torch's CPU ``sqrt`` uses, for bit parity of the Adam kernels.

Where torch is built with MKL (the x86 wheels), ``Tensor.sqrt`` on the CPU calls MKL VML's
``vsSqrt``/``vdSqrt``, which is faithfully rounded rather than IEEE (about one float32 root in six
differs by one ulp). ``_core.adam_step`` takes the routine's address so its updates match torch's
``foreach=False``/``foreach=True`` paths bit for bit; without it the kernel uses IEEE ``sqrt``.
The address comes from torch's own library, found by ctypes: the extension links nothing of torch.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

import torch

# (Fortran symbol, dtype): MKL's LP64 interface, `void f(const int* n, const T* in, T* out)`.
_SYMBOLS = (("VSSQRT_", torch.float32), ("VDSQRT_", torch.float64))


def _probe(fn: Any, dtype: torch.dtype) -> bool:  # fn: a ctypes foreign function
    # Values whose MKL root differs from the IEEE one in several places: the routine is only used
    # when it reproduces torch.sqrt on them exactly.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4099, generator=gen, dtype=dtype) * 0.01
    out = torch.empty_like(x)
    n = ctypes.c_int(x.numel())
    fn(ctypes.byref(n), ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(out.data_ptr()))
    return bool(torch.equal(out, x.sqrt()))


@functools.lru_cache(maxsize=1)
def torch_sqrt_routines() -> tuple[int, int, int]:
    """``(sqrt_f32, sqrt_f64, sqrt_threads_local)`` addresses for ``_core.adam_step``; 0 means IEEE ``sqrt``.

    The roots are 0 where torch has no MKL, the symbol is missing, or it does not reproduce
    ``torch.sqrt``. The third is MKL's C ``mkl_set_num_threads_local`` (exported as
    ``MKL_Set_Num_Threads_Local``): the kernel's workers use it to call the routine single-threaded
    (0 where it is missing; the routine may then start its own threads).
    """
    if not torch.backends.mkl.is_available():
        return (0, 0, 0)
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    except OSError:
        return (0, 0, 0)
    found = []
    for name, dtype in _SYMBOLS:
        fn = getattr(lib, name, None)
        if fn is None:
            found.append(0)
            continue
        fn.restype = None
        found.append((ctypes.cast(fn, ctypes.c_void_p).value or 0) if _probe(fn, dtype) else 0)
    local = getattr(lib, "MKL_Set_Num_Threads_Local", None)
    found.append((ctypes.cast(local, ctypes.c_void_p).value or 0) if local is not None and any(found) else 0)
    return (found[0], found[1], found[2])
