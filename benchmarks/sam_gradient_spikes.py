"""Where do SAM's gradient spikes on copy come from?

    python benchmarks/experiments.py run sam-copy-lr1e-3-1   # stop it once it reaches lengths <= 15
    python benchmarks/sam_gradient_spikes.py runs/sam-copy-lr1e-3-1

On a trained SAM (no temporal links) it draws batches at the curriculum level the
run reached, finds the batches whose gradient norm is far above the median, then
the one sequence and the one scored step that carry the worst of them, and prints
that sequence's write and interpolation gates and its sharpest read weight per
step. It also repeats the worst batches with nearly empty rows left out of the
content search (`torchdnc.sparse.index.ZERO_ROW_NORM` raised), to test whether
reading rows of tiny norm is the cause, and with the gradient through the previous
read weights in the write stopped (``write_read_gradient=False``).
"""

from __future__ import annotations

import argparse
import sys

import torch

from torchdnc.sparse import index as sparse_index
from torchdnc.tasks.base import Batch
from torchdnc.training import load_trained


def gradient_norm(model, task, batch: Batch) -> float:
    model.zero_grad()
    outputs, _ = model(batch.inputs)
    task.loss(outputs, batch).backward()
    return sum(p.grad.norm().item() ** 2 for p in model.parameters() if p.grad is not None) ** 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config, task, model, payload = load_trained(args.run_dir, which="last")
    model.train()
    level = payload["progress"]["level"]
    setting = task.levels()[level]
    generator = torch.Generator().manual_seed(args.seed)
    batches = [task.sample(config.batch_size, generator, **setting) for _ in range(args.batches)]
    norms = [gradient_norm(model, task, b) for b in batches]
    order = sorted(range(len(batches)), key=lambda i: -norms[i])
    median = sorted(norms)[len(norms) // 2]
    print(f"step {payload['step']}, level {level} {setting}; {len(batches)} batches of "
          f"{config.batch_size}: median gradient norm {median:.0f}, largest "
          f"{[round(norms[i]) for i in order[:5]]}")
    worst = batches[order[0]]
    alone = [gradient_norm(model, task, Batch(worst.inputs[j:j + 1], worst.targets[j:j + 1],
                                              worst.loss_mask[j:j + 1]))
             for j in range(worst.inputs.shape[0])]
    j = max(range(len(alone)), key=lambda k: alone[k])
    print(f"worst batch, each sequence alone: {[round(v) for v in alone]}")
    one = Batch(worst.inputs[j:j + 1], worst.targets[j:j + 1], worst.loss_mask[j:j + 1])
    steps = one.loss_mask[0].nonzero().flatten().tolist()
    per_step = []
    for t in steps:
        mask = torch.zeros_like(one.loss_mask)
        mask[0, t] = 1
        per_step.append((t, round(gradient_norm(model, task, Batch(one.inputs, one.targets, mask)))))
    print(f"its sequence {j} ({one.inputs.shape[1]} steps), each scored step's loss alone: {per_step}")
    with torch.no_grad():
        _, _, trace = model(one.inputs, return_trace=True)
    print("write gates:        ", [round(v, 2) for v in trace.write_gates[0].flatten().tolist()])
    print("interpolation gates:", [round(v, 2) for v in trace.interpolation_gates[0].flatten().tolist()])
    print("largest read weight:", [round(v, 2) for v in
                                   trace.read_weights[0].flatten(1).max(-1).values.tolist()])
    default = sparse_index.ZERO_ROW_NORM
    for threshold in (1e-8, 1e-4, 1e-2):
        sparse_index.ZERO_ROW_NORM = threshold
        print(f"rows of squared norm <= {threshold:g} left out of the search: worst batches' norms "
              f"{[round(gradient_norm(model, task, batches[i])) for i in order[:4]]}")
    sparse_index.ZERO_ROW_NORM = default
    model.config.write_read_gradient = False  # the same weights, the write path's gradient stopped
    stopped = [gradient_norm(model, task, b) for b in batches]
    print(f"write_read_gradient=False: worst batches' norms "
          f"{[round(stopped[i]) for i in order[:4]]}, median {sorted(stopped)[len(stopped) // 2]:.0f}, "
          f"largest {max(stopped):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
