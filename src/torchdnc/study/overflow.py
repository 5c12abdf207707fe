"""Part 3, running out of memory (Nature, Extended Data Fig. 1).

Ten copies of five vectors each go through a memory of ten slots: 50 vectors,
so slots must be freed and used again. Trained with a feed-forward and with an
LSTM controller, the DNC should free each slot right after reading it (free
gates on during the recalls) and allocate it again (allocation gate on during
the writes). Ablations on the same task: free gates held at 0 (nothing is ever
freed) and allocation gates held at 0 (writing by content only). Then overload
on purpose: one copy of more vectors than slots, with no chance to free: which
vectors are lost, by their place in the sequence (their age at recall)? The
overload uses DNCs trained on single copies of 1-20 vectors (N = 24, the load
part's copy model), tested with N = 10, so that long copies are no surprise to
them and only the memory is short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from torchdnc.study.common import (Run, load, score, spread, summary_table, train_all, write_rows,
                                   write_summary)
from torchdnc.viz.memory import memory_figure
from torchdnc.viz.style import pyplot, save_figure

BLOCKS, LENGTH, SLOTS = 10, 5, 10
OVERRIDES = {"memory_size": SLOTS, "word_size": 16, "num_reads": 1, "hidden_size": 64,
             "min_length": LENGTH, "max_length": LENGTH, "min_blocks": 1, "max_blocks": BLOCKS,
             "curriculum_by": "blocks", "curriculum_start": 2, "curriculum_levels": 5,
             "iterations": 4000, "curriculum_threshold": 1.0,
             "solved_threshold": 0.0}
VARIANTS = {
    "full": {},
    "no-free": {"fixed_free_gates": 0.0},
    "no-allocation": {"fixed_allocation_gates": 0.0},
}
BLOCK_COUNTS = (2, 4, 6, 8, 10)  # the curriculum's levels
# The same ablations at test time: the DNCs trained with every gate free to learn,
# run with a gate held (`DNC.with_held_gates`). Trained with a gate held, a DNC can
# learn a way around it; held only at test time, it shows what the learned
# solution relies on.
HELD_AT_TEST = {
    "full, free held at test": {"free_gates": 0.0},
    "full, allocation held at test": {"allocation_gates": 0.0},
}
# The feed-forward runs come first: the fused kernel runs LSTM controllers only, so
# they take the plain path (about 7 iterations/s here, some 7x slower), and started
# first they run beside the others instead of after them.
CONTROLLERS = {"feedforward": {"controller": "feedforward", "num_layers": 1},
               "lstm": {"controller": "lstm"}}
OVERLOAD = (5, 8, 9, 10, 12, 16, 20)
# The overload models: copy of 1-20 vectors, LSTM 64, W 16, N 24 (tested with N = SLOTS).
OVERLOAD_MODEL = {"word_size": 16, "memory_size": 24, "iterations": 3000}


def runs(seeds: int, quick: bool) -> list[Run]:
    found = []
    for controller, options in CONTROLLERS.items():
        for variant, changes in VARIANTS.items():
            if controller == "feedforward" and variant != "full":
                continue  # the ablations use the LSTM controller
            for seed in range(seeds):
                overrides = {**OVERRIDES, **options, **changes, "seed": seed}
                if quick:
                    overrides.update(iterations=20, eval_interval=10, eval_batches=1)
                found.append(Run(f"overflow-{controller}-{variant}-s{seed}", "copy", "quick",
                                 overrides))
    for seed in range(seeds):
        overrides = {**OVERLOAD_MODEL, "seed": seed}
        if quick:
            overrides.update(iterations=20, eval_interval=10, eval_batches=1)
        found.append(Run(f"overload-lstm-s{seed}", "copy", "quick", overrides))
    return found


def run(out: Path, seeds: int = 3, quick: bool = False, jobs: int = 2) -> dict[str, Any]:
    batches, batch_size = (1, 4) if quick else (8, 32)
    rows, usage_rows, age_rows, block_rows = [], [], [], []
    shown_models: dict[str, tuple] = {}  # controller -> (bit error, seed, model, task, params)
    trained = train_all(runs(seeds, quick), out / "runs", jobs)
    written = []
    for name, path in trained.items():
        _, task, model = load(path)
        if name.startswith("overload-"):
            seed = int(name.rsplit("-s", 1)[1])
            age_rows += overload(model.with_memory_size(SLOTS), task, seed, quick)
            continue
        parts = name.split("-")  # overflow-CONTROLLER-VARIANT-sSEED; variants hold hyphens
        controller, variant, seed = parts[1], "-".join(parts[2:-1]), int(parts[-1][1:])
        params = {"min_length": LENGTH, "max_length": LENGTH, "min_blocks": BLOCKS,
                  "max_blocks": BLOCKS}
        tested = {variant: model}
        if variant == "full" and controller == "lstm":
            tested.update({label: model.with_held_gates(**gates)
                           for label, gates in HELD_AT_TEST.items()})
        batch = task.sample(1 if quick else 16, torch.Generator().manual_seed(seed), **params)
        for label, tested_model in tested.items():
            m = score(tested_model, task, params, batches, batch_size, seed)
            rows.append(dict(controller=controller, variant=label, seed=seed,
                             bit_error=m["bit_error"], perfect=m["perfect"]))
            if label == variant:
                own_error = m["bit_error"]
            with torch.no_grad():
                outputs, _, trace = tested_model(batch.inputs, return_trace=True)
            usage = trace.usage.mean(0).sum(-1)  # slots in use over time
            usage_rows += [dict(controller=controller, variant=label, seed=seed, step=t,
                                used=float(u)) for t, u in enumerate(usage.tolist())]
        if variant != "full":
            continue
        for blocks in BLOCK_COUNTS[:2] if quick else BLOCK_COUNTS:  # error against blocks
            m = score(model, task, {**params, "min_blocks": blocks, "max_blocks": blocks},
                      batches, batch_size, seed)
            block_rows.append(dict(controller=controller, seed=seed, blocks=blocks,
                                   vectors=blocks * LENGTH, bit_error=m["bit_error"],
                                   perfect=m["perfect"]))
        if controller not in shown_models or own_error < shown_models[controller][0]:
            shown_models[controller] = (own_error, seed, model, task, params)
    for controller, (_, seed, model, task, params) in shown_models.items():
        # The memory figure: the seed with the fewest wrong bits on the ten blocks.
        shown = task.sample(1, torch.Generator().manual_seed(seed), **params)
        with torch.no_grad():
            outputs, _, trace = model(shown.inputs, return_trace=True)
        figure = memory_figure(trace, inputs=shown.inputs[0], targets=shown.targets[0],
                               outputs=torch.sigmoid(outputs[0]), steps=shown.loss_mask[0].bool(),
                               max_heads=1)
        written.append(save_figure(figure, out / f"overflow-{controller}.png",
                                   f"{BLOCKS} copies of {LENGTH} vectors through {SLOTS} slots "
                                   f"({controller} controller, seed {seed})"))
    meta = {"seeds": seeds, "quick": quick, "blocks": BLOCKS, "length": LENGTH, "slots": SLOTS}
    written += write_rows(out, "overflow", rows, meta)
    written += write_rows(out, "overflow_usage", usage_rows, meta)
    written += write_rows(out, "overload", age_rows, meta)
    written += write_rows(out, "overflow_blocks", block_rows, meta)
    written += figures(out, rows, usage_rows, age_rows)
    written.append(write_summary(out, "torchdnc study overflow", [
        summary_table(rows, ("controller", "variant"), ("bit_error", "perfect"),
                      f"{BLOCKS} copies of {LENGTH} vectors through {SLOTS} slots"),
        summary_table(block_rows, ("controller", "blocks", "vectors"), ("bit_error", "perfect"),
                      f"the full DNCs against the number of copies of {LENGTH} vectors "
                      f"through {SLOTS} slots"),
        summary_table(age_rows, ("controller", "items", "position"), ("bit_error",),
                      f"one copy of k vectors through {SLOTS} slots: error by position")]))
    return {"written": [str(p) for p in written], "overflow": rows, "overload": age_rows}


def overload(model, task, seed: int, quick: bool) -> list[dict[str, Any]]:
    """One copy of k vectors through `SLOTS` slots, k up to twice as many: the
    bit error at each position of the copy (0: the vector written first)."""
    found = []
    for k in (OVERLOAD[:2] if quick else OVERLOAD):
        batch = task.sample(4 if quick else 64, torch.Generator().manual_seed(100 + seed),
                            min_length=k, max_length=k)
        with torch.no_grad():
            outputs = model(batch.inputs)[0]
        wrong = ((outputs > 0).float() != batch.targets).float().mean(-1)  # [B, T]
        index = batch.info["item_index"]
        for position in range(k):
            found.append(dict(controller="lstm", seed=seed, items=k, position=position,
                              age=k - 1 - position,  # vectors written after it
                              bit_error=float(wrong[index == position].mean())))
    return found


def figures(out: Path, rows, usage_rows, age_rows) -> list[Path]:
    plt = pyplot()
    figure, (bars, usage) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    labels, means, errors, colors = [], [], [], []
    for controller in CONTROLLERS:
        for variant in (*VARIANTS, *HELD_AT_TEST):
            chosen = [r["bit_error"] for r in rows if r["controller"] == controller
                      and r["variant"] == variant]
            if chosen:
                mean, sd = spread(chosen)
                wrapped = variant.replace(", ", "\n").replace(" held", "\nheld")
                labels.append(f"{controller}\n{wrapped}")
                means.append(mean)
                errors.append(sd)
                colors.append("tab:orange" if variant in HELD_AT_TEST else "tab:blue")
    bars.bar(range(len(labels)), means, yerr=errors, capsize=3, color=colors)
    bars.set_xticks(range(len(labels)))
    bars.set_xticklabels(labels, fontsize=7)
    bars.set_ylabel("bit error, 10 copies of 5 vectors\n(orange: gate held only at test time)")
    for variant in (*VARIANTS, *HELD_AT_TEST):
        chosen = [r for r in usage_rows if r["controller"] == "lstm" and r["variant"] == variant]
        steps = sorted({r["step"] for r in chosen})
        if steps:
            usage.plot(steps, [spread([r["used"] for r in chosen if r["step"] == t])[0]
                               for t in steps], label=variant)
    usage.axhline(SLOTS, color="gray", ls=":", lw=0.8)
    usage.set_xlabel("time step")
    usage.set_ylabel("total usage (slots in use), LSTM controller")
    usage.legend(fontsize=8)
    written = [save_figure(figure, out / "overflow-ablations.png", "freeing and reusing slots")]
    if age_rows:
        figure, axis = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
        for controller in CONTROLLERS:
            for k in sorted({r["items"] for r in age_rows}):
                chosen = [r for r in age_rows if r["controller"] == controller and r["items"] == k]
                if not chosen:
                    continue
                positions = sorted({r["position"] for r in chosen})
                axis.plot(positions, [spread([r["bit_error"] for r in chosen
                                              if r["position"] == p])[0] for p in positions],
                          marker="o", label=f"{controller}, {k} vectors",
                          linestyle="-" if controller == "lstm" else "--")
        axis.set_xlabel("position of the vector in the sequence (0: written first)")
        axis.set_ylabel("bit error when recalled")
        axis.legend(fontsize=7)
        written.append(save_figure(figure, out / "overload.png",
                                   f"one copy of more vectors than its {SLOTS} slots"))
    return written
