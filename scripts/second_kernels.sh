#!/usr/bin/env bash
# Runs a command under the second set of kernels, on which the tests marked `numerics` must pass as well:
# numpy without the SIMD extensions it found above its baseline (computed here, so an AVX-512 machine loses those
# too) and torch on its scalar ATen kernels. Floating-point results then differ in their last bits from a native
# run, as they do on another CPU.
#   usage: scripts/second_kernels.sh .venv/bin/python -m pytest -q -m numerics
# The first word of the command must be the Python whose numpy is asked (the project's .venv by default).
set -euo pipefail
python="${1:?usage: scripts/second_kernels.sh PYTHON ARGS...}"
found_extensions='
try:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
except ImportError:  # numpy < 2
    from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
print(" ".join(name for name in __cpu_dispatch__ if __cpu_features__.get(name)))
'
found=$("$python" -c "$found_extensions")
export NPY_DISABLE_CPU_FEATURES="$found" ATEN_CPU_CAPABILITY=default
# Refuse to report a pass that ran on the native kernels after all
left=$("$python" -c "$found_extensions")
capability=$("$python" -c "import torch; print(torch.backends.cpu.get_cpu_capability())")
if [ -n "$left" ] || [ "$capability" != "DEFAULT" ]; then
  echo "second kernels not in effect: numpy still dispatches to '$left', torch to '$capability'" >&2
  exit 1
fi
echo "second kernels: NPY_DISABLE_CPU_FEATURES='$found' ATEN_CPU_CAPABILITY=default" >&2
exec "$@"
