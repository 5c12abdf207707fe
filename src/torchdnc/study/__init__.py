"""The study: does the DNC scale, and what happens when its memory runs out?
(docs/scaling.md answers with the numbers and figures these write.)

    torchdnc study load        # 1: error against items: DNC (N = 1/4 .. 4 x items), LSTM, super-LSTM;
                               #    and against controller size H; 4: the N x items heat map
    torchdnc study retention   # 2: recall after D blank steps, D up to 3,000
    torchdnc study overflow    # 3: Extended Data Fig. 1: 10 copies of 5 through 10 slots, ablations,
                               #    overload
    torchdnc study cost        # 5: time and memory per step against N, dense / sparse / LSTM
    torchdnc study all --quick # every part in seconds (the test suite runs this)

Each part trains with the one training loop (seeded, one thread per run, two
runs at a time), writes its numbers (CSV and JSON) and figures into
``--out/PART`` and keeps its training runs there, so a part that is run again
only evaluates.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from torchdnc.study import cost, load, overflow, retention

PARTS = {"load": load.run, "retention": retention.run, "overflow": overflow.run, "cost": cost.run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchdnc study", description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=[*PARTS, "all"])
    parser.add_argument("--out", default="study", help="folder for results (default ./study)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per learned curve (default 3)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time (default 2)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks that it runs")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    for part in PARTS if args.part == "all" else [args.part]:
        start = time.time()
        result = PARTS[part](Path(args.out) / part, seeds=args.seeds, quick=args.quick,
                             jobs=args.jobs)
        seconds = time.time() - start
        (Path(args.out) / part / "timing.json").write_text(
            json.dumps({"part": part, "seconds": seconds, "quick": args.quick,
                        "seeds": args.seeds, "jobs": args.jobs}) + "\n")
        print(f"{part}: {seconds / 60:.1f} min; written: " + ", ".join(result["written"]))
    return 0
