#!/usr/bin/env bash
# One script for a machine with a GPU: the device tests on CUDA, then the speed
# table for configurations a, b and c with every implementation that runs there.
#
#   benchmarks/gpu_check.sh [--out DIR]    # on a CUDA machine (about 5-10 minutes)
#   benchmarks/gpu_check.sh --dry-run      # the same steps on the CPU, tiny sizes (CI runs this)
#
# Writes DIR/tests.log, DIR/bench.json and DIR/table.md (default DIR: gpu-check).
# PYTHON selects the interpreter (default: python3 on PATH).
set -euo pipefail

dry_run=0
out=gpu-check
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) out="$2"; shift ;;
    --out=*) out="${1#--out=}" ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (valid: --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done

python="${PYTHON:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out"

if [ "$dry_run" = 1 ]; then
  device=cpu
  implementations=fused,plain  # compile is covered by the device tests (a minute to build here)
  bench_sizes=(--configs a --steps 4 --batch 2 --repeats 1)
else
  device=cuda
  if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: torch.cuda.is_available() is False here; use --dry-run on a CPU machine" >&2
    exit 1
  fi
  implementations=plain,compile  # the fused kernel is CPU-only
  bench_sizes=(--configs a,b,c --repeats 10)
fi

echo "== device tests on $device"
TORCHDNC_TEST_DEVICE="$device" "$python" -m pytest -q -p no:cacheprovider \
  "$root/tests/test_device.py" 2>&1 | tee "$out/tests.log"

echo "== speed on $device"
baselines=lstmcell,lstm
if "$python" -c "import dnc" 2>/dev/null; then baselines="$baselines,pypi-dnc"; fi
"$python" -m torchdnc.bench.speed --device "$device" --implementations "$implementations" \
  --baselines "$baselines" "${bench_sizes[@]}" --json "$out/bench.json" | tee "$out/bench.log"

"$python" - "$out" "$device" <<'EOF'
import json, sys, platform
from pathlib import Path

import torch
from torchdnc.bench.speed import table

out, device = Path(sys.argv[1]), sys.argv[2]
results = json.loads((out / "bench.json").read_text())
name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "CPU"
header = (f"Speed on {name} (torch {torch.__version__}), `benchmarks/gpu_check.sh`; "
          "seconds per call, medians.\n\n")
(out / "table.md").write_text(header + table(results) + "\n")
print(f"written: {out / 'table.md'}")
EOF
