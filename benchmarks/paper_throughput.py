"""How long would the paper's graph curricula take here? Measured throughput, projected.

For each graph task's `paper` preset (the paper's network sizes, batch size and
optimizer), this times training updates on the first and on the last lesson of
the paper's curriculum (sequence lengths grow a lot between them) and prints
seconds per update, training examples per second, and the days that one million
training examples would take at each rate. The paper reports one training
length for the graph tasks: the DNC reached the last traversal lesson "after
around one million training examples" (Graves et al. 2016, Graph experiments);
for shortest path and inference it gives none, so their rows are per million
examples too. A curriculum spends its examples across lessons, so the truth lies
between the first-lesson and the last-lesson projections.

    python benchmarks/paper_throughput.py                      # all three, 2 threads
    python benchmarks/paper_throughput.py traversal --updates 5 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from torchdnc.training.config import resolve_config
from torchdnc.training.runs import build_model, build_optimizer

TASKS = ("traversal", "shortest_path", "inference")
EXAMPLES = 1_000_000  # the paper's traversal figure


def seconds_per_update(task_name: str, lesson: int, updates: int, seed: int = 0) -> dict:
    """Median seconds of one update (sampling, forward, backward, optimizer step)
    on ``lesson`` (index into the paper curriculum) after one warm-up update."""
    config = resolve_config(task_name, "paper", {"seed": seed, "progress": False})
    task = config.make_task()
    levels = task.levels()
    params = levels[lesson]
    torch.manual_seed(seed)
    model = build_model(config, task)
    optimizer = build_optimizer(config, model)
    generator = torch.Generator().manual_seed(seed)
    times, lengths = [], []
    for step in range(updates + 1):
        start = time.perf_counter()
        batch = task.training_batch(model, config.batch_size, generator, **params)
        outputs, _ = model(batch.inputs, mask=batch.mask)
        loss = task.loss(outputs, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
        optimizer.step()
        if step:  # the first update warms up
            times.append(time.perf_counter() - start)
            lengths.append(batch.inputs.shape[1])
    times.sort()
    median = times[len(times) // 2]
    return {"task": task_name, "lesson": lesson + 1, "lessons": len(levels),
            "batch_size": config.batch_size, "steps": sum(lengths) / len(lengths),
            "seconds": median, "examples_per_s": config.batch_size / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tasks", nargs="*", help=f"any of {', '.join(TASKS)} (default: all)")
    parser.add_argument("--updates", type=int, default=5, help="timed updates per lesson")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"tasks: expected any of {TASKS}, got {unknown}")
    torch.set_num_threads(args.threads)
    print(f"paper presets, {args.threads} thread(s), median of {args.updates} updates; "
          f"days for {EXAMPLES:,} training examples at that rate")
    print("| task | lesson | batch | time steps | s / update | examples / s | days per 1M examples |")
    print("|---|---|---|---|---|---|---|")
    for name in args.tasks or TASKS:
        count = len(resolve_config(name, "paper", {}).make_task().levels())
        for lesson in (0, count - 1):
            row = seconds_per_update(name, lesson, args.updates)
            days = EXAMPLES / row["examples_per_s"] / 86400
            print(f"| {name} | {row['lesson']} of {row['lessons']} | {row['batch_size']} | "
                  f"{row['steps']:.0f} | {row['seconds']:.3f} | {row['examples_per_s']:.2f} | "
                  f"{days:.1f} |", flush=True)


if __name__ == "__main__":
    main()
