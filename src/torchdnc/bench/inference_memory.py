"""Peak memory of a DNC forward pass against the sequence length T.

    python -m torchdnc.bench.inference_memory                 # T = 100 and 10,000
    python -m torchdnc.bench.inference_memory --steps 100,1000,10000 --json out.json

Each (mode, implementation, T) runs in a fresh process and reports its peak
resident memory (ru_maxrss, torch included) and the growth over a 2-step warm-up
call. Modes: ``no_grad`` (inference: nothing is kept per step beyond the
outputs), ``inference_mode``, and ``grad`` (a training forward, which keeps what
its backward needs). Model: the ``a`` configuration of ``torchdnc bench``
(LSTM 64, N 16, W 16, R 4, batch 16).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKER = """
import resource, sys, time, torch
from torchdnc import DNC
mode, implementation, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
torch.set_num_threads(1)
model = DNC(input_size=8, output_size=8, hidden_size=64, memory_size=16, word_size=16,
            num_reads=4, implementation=implementation)
x = torch.randn(16, steps, 8)
context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
           "grad": torch.enable_grad}[mode]
with context():
    model(x[:, :2])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    y, _ = model(x)
    seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(peak / 1024, (peak - base) / 1024, seconds)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="100,10000", help="comma-separated T values")
    parser.add_argument("--modes", default="no_grad,inference_mode,grad")
    parser.add_argument("--implementations", default="fused,plain")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    print("| mode | implementation | T | peak RSS (MB) | growth over warm-up (MB) | forward (s) |")
    print("|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        for implementation in args.implementations.split(","):
            for steps in (int(s) for s in args.steps.split(",")):
                done = subprocess.run([sys.executable, "-c", WORKER, mode, implementation, str(steps)],
                                      capture_output=True, text=True)
                if done.returncode:
                    print(f"| {mode} | {implementation} | {steps} | failed: "
                          f"{done.stderr.strip().splitlines()[-1]} | | |")
                    continue
                peak, growth, seconds = (float(v) for v in done.stdout.split())
                rows.append(dict(mode=mode, implementation=implementation, steps=steps,
                                 peak_mb=peak, growth_mb=growth, forward_s=seconds))
                print(f"| {mode} | {implementation} | {steps} | {peak:.0f} | {growth:.0f} | "
                      f"{seconds:.3f} |", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
