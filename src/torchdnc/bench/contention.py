"""Training beside other work on the same cores: one run alone, then several at once.

A shared workstation, a data-loader process or a second experiment all compete
for the cores. A kernel that waits at a barrier every time step slows down far
beyond fair sharing when that happens; this benchmark measures it::

    python -m torchdnc.bench.contention            # copy quick, 1500 iterations
    python -m torchdnc.bench.contention --runs 2 --iterations 1500

It times ``torchdnc train copy --preset quick --iterations=N --solved_threshold=0``
alone, then ``--runs`` copies of it started together, and prints each run's wall
time and its ratio to the lone run. With ``R`` runs sharing the cores, fair
sharing is a ratio of about ``R`` (each gets 1/R of the machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _command(out: Path, iterations: int, threads: int) -> list[str]:
    command = [sys.executable, "-m", "torchdnc", "train", "copy", "--preset", "quick",
               f"--iterations={iterations}", "--solved_threshold=0", "--out", str(out),
               "--progress=false"]
    if threads:
        command.append(f"--threads={threads}")
    return command


def timed_runs(count: int, iterations: int, threads: int, root: Path) -> list[float]:
    """Wall seconds of ``count`` trainings started together."""
    start = time.perf_counter()
    processes = [subprocess.Popen(_command(root / f"run{i}", iterations, threads),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i in range(count)]
    seconds = [0.0] * count
    waiting = set(range(count))
    while waiting:
        for i in list(waiting):
            if processes[i].poll() is not None:
                seconds[i] = time.perf_counter() - start
                waiting.discard(i)
        time.sleep(0.05)
    for process in processes:
        if process.returncode != 0:
            raise RuntimeError(f"training failed: {process.stderr.read().strip()[-500:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchdnc.bench.contention",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--runs", type=int, default=2, help="trainings started together")
    parser.add_argument("--threads", type=int, default=0,
                        help="--threads for each training (default: torch's, as users run it)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alone = timed_runs(1, args.iterations, args.threads, root / "alone")[0]
        together = timed_runs(args.runs, args.iterations, args.threads, root / "together")
    ratios = [t / alone for t in together]
    print(f"alone: {alone:.1f} s")
    for i, (seconds, ratio) in enumerate(zip(together, ratios)):
        print(f"run {i + 1} of {args.runs} together: {seconds:.1f} s ({ratio:.2f}x the lone run; "
              f"fair sharing ~{args.runs}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"iterations": args.iterations, "runs": args.runs, "threads": args.threads,
             "alone_s": alone, "together_s": together, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
