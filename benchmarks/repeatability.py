"""Does a seeded training repeat bit for bit in a fresh process?

Runs the same `torchdnc train` command (seeded, one thread) twice, each in its own
process, and compares the logged training losses step by step. Prints the first
logged step where they differ, or that they agree. Known today (see the closing
notes): on the fused kernel the ten-copies configuration of the scaling study
(the default here) drifts apart in the last digits after a few hundred steps,
while the plain path (``--implementation plain``) and the copy quick preset repeat.

    python benchmarks/repeatability.py                          # the study's overflow task
    python benchmarks/repeatability.py --implementation plain --iterations 250
    python benchmarks/repeatability.py --args "copy --preset quick" --iterations 400
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

OVERFLOW = ("copy --preset quick --dnc.hidden_size=64 --dnc.memory_size=10 --dnc.word_size=16 "
            "--dnc.num_reads=1 --task.min_length=5 --task.max_length=5 --task.min_blocks=1 "
            "--task.max_blocks=10 --task.curriculum_by=blocks --task.curriculum_start=2 "
            "--task.curriculum_levels=5 --curriculum_threshold=1.0 --solved_threshold=0")


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows if row["kind"] == "train"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--args", default=OVERFLOW, help="the task and options after `torchdnc train`")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--implementation", default="auto", choices=("auto", "fused", "plain"))
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        runs = []
        for name in ("a", "b"):
            out = Path(folder) / name
            command = [sys.executable, "-m", "torchdnc", "train", *shlex.split(options.args),
                       f"--iterations={options.iterations}", "--seed=0", "--threads=1",
                       f"--dnc.implementation={options.implementation}", "--progress=false",
                       "--out", str(out)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            runs.append(losses(out))
    for (step, first), (_, second) in zip(*runs):
        if first != second:
            print(f"differ from step {step} on: loss {first!r} against {second!r}")
            return 1
    print(f"the two runs agree on all {len(runs[0])} logged losses (to step {runs[0][-1][0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
