"""Does the sparse DNC learn? Copy and associative recall at N = 64, beside the dense DNC.

    python -m torchdnc.bench.sparse_learning_check copy sparse runs/check-copy-sdnc
    python -m torchdnc.bench.sparse_learning_check copy dense runs/check-copy-dnc

Both models are trained by the one training loop (`torchdnc.training.train`)
with the same task preset, seed and optimizer; only the model differs
(``--model=sparse`` with the ``--sparse`` fields, so the sparse model gets
exactly the dense one's sizes). Stop a run early with SIGTERM (e.g. ``timeout
-s TERM 600 ...``): the loop saves and logs as usual. Prints the evaluations
and the step at which the task was solved.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torchdnc.training import read_metrics, resolve_config, train

# Shared settings: the copy "quick" preset, with N = 64 for both models.
# Associative recall uses the same optimizer settings and R = 2.
SETTINGS = {
    "copy": ("quick", {"memory_size": "64"}),
    "associative_recall": ("full", {
        "memory_size": "64", "hidden_size": "64", "word_size": "16", "num_reads": "2",
        "optimizer": "adam", "lr": "3e-3", "batch_size": "16", "iterations": "20000",
        "eval_interval": "100", "eval_batches": "4", "curriculum_threshold": "1.0",
        "solved_threshold": "0.05", "checkpoint_interval": "500"}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=sorted(SETTINGS))
    parser.add_argument("model", choices=["dense", "sparse"])
    parser.add_argument("run_dir")
    parser.add_argument("--sparse", default='{"sparse_reads": 4, "link_entries": 8}',
                        help="SparseDNCConfig fields as JSON (default: SDNC, K=4, K_L=8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    preset, overrides = SETTINGS[args.task]
    sparse_fields = json.loads(args.sparse)
    overrides = {**overrides, "seed": args.seed, "threads": args.threads, "progress": False}
    if args.model == "sparse":
        overrides.update({"model": "sparse", **{f"sparse.{k}": v for k, v in sparse_fields.items()}})
    config = resolve_config(args.task, preset, overrides)
    result = train(config, Path(args.run_dir), force=True)
    records = read_metrics(args.run_dir)
    for record in records:
        if record["kind"] in ("eval", "level"):
            print(json.dumps(record))
    print(json.dumps({"model": args.model, "task": args.task, "sparse": sparse_fields
                      if args.model == "sparse" else None, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
