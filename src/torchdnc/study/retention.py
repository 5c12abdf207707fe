"""Part 2, retention over time: store a few items, wait D blank steps, recall.

The claim to test: an LSTM's state erodes a little with every step, so what it
holds fades as D grows; the DNC's memory does not change unless it is written
to. A DNC and an LSTM with the DNC's parameter count are trained on copy with
up to 5 vectors and delays of up to 20 blank steps (the delimiter flag comes
again on the last blank step: the cue to answer), then tested with delays far
beyond that, up to thousands of steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from torchdnc.study.common import (Run, load, score, spread, summary_table, train_all, write_rows,
                                   write_summary)
from torchdnc.viz.style import pyplot, save_figure

TRAIN = {"min_length": 1, "max_length": 5, "min_delay": 0, "max_delay": 20}
OVERRIDES = {"hidden_size": 64, "memory_size": 16, "word_size": 16, "num_reads": 1,
             "curriculum_start": 2, "curriculum_levels": 4, "iterations": 6000,
             "recall_cue": True,
             **{k: v for k, v in TRAIN.items() if k != "min_length"}}
DELAYS = (0, 10, 30, 100, 300, 1000, 3000)
ITEMS = 5


def runs(seeds: int, quick: bool) -> list[Run]:
    base = dict(OVERRIDES)
    if quick:
        base.update(iterations=20, eval_interval=10, eval_batches=1)
    found = []
    for seed in range(seeds):
        found.append(Run(f"retention-dnc-s{seed}", "copy", "quick", {**base, "seed": seed}))
        found.append(Run(f"retention-lstm-s{seed}", "copy", "quick",
                         {**base, "seed": seed, "model": "lstm"}))
    return found


def run(out: Path, seeds: int = 3, quick: bool = False, jobs: int = 2) -> dict[str, Any]:
    batches, batch_size = (1, 4) if quick else (4, 32)
    delays = DELAYS[:2] if quick else DELAYS
    rows, waiting = [], []
    for name, path in train_all(runs(seeds, quick), out / "runs", jobs).items():
        _, task, model = load(path)
        kind, seed = name.split("-")[1], int(name.rsplit("-s", 1)[1])
        # The DNC also with its free gates held at 0 at test time: nothing it stored
        # can be released for the allocation to overwrite.
        held = model.with_held_gates(free_gates=0.0) if kind == "dnc" else None
        for delay in delays:
            m = score(model, task, {"min_length": ITEMS, "max_length": ITEMS, "min_delay": delay,
                                    "max_delay": delay}, batches, batch_size, seed)
            rows.append(dict(model=kind, seed=seed, delay=delay, items=ITEMS,
                             bit_error=m["bit_error"], perfect=m["perfect"]))
            if kind == "dnc":
                m = score(held, task, {"min_length": ITEMS, "max_length": ITEMS,
                                       "min_delay": delay, "max_delay": delay},
                          batches, batch_size, seed)
                rows.append(dict(model="dnc, free gates held at test", seed=seed, delay=delay,
                                 items=ITEMS, bit_error=m["bit_error"], perfect=m["perfect"]))
                waiting.append(_waiting(model, held, task, seed, delay, quick))
    written = write_rows(out, "retention", rows, {"seeds": seeds, "quick": quick, "train": TRAIN})
    written += write_rows(out, "waiting", waiting, {"seeds": seeds, "quick": quick})
    written.append(figure(out, rows))
    written.append(write_summary(out, "torchdnc study retention", [
        summary_table(rows, ("model", "delay"), ("bit_error", "perfect"),
                      f"recall of {ITEMS} vectors after a delay"),
        summary_table(waiting, ("seed", "delay"), ("write_gate", "slots_used"),
                      "the DNC while it waits: mean write gate over the blank steps, "
                      "slots in use (total usage) when the answer starts"),
        summary_table(waiting, ("seed", "delay"), ("stored_similarity", "stored_similarity_held"),
                      "how much of what was stored is still there when the answer starts: "
                      "cosine similarity of the rows written most during the input, then "
                      "and at the cue (as trained; free gates held at 0 at test)")]))
    return {"written": [str(p) for p in written], "retention": rows, "waiting": waiting}


def _waiting(model, held, task, seed: int, delay: int, quick: bool) -> dict[str, Any]:
    """What a DNC writes while it waits (``study/retention/waiting.csv``): its mean
    write gate over the blank steps, its total usage on the step the answer
    starts, and how much of what it stored is still there then: the cosine
    similarity between the ``ITEMS`` rows written most during the input, right
    after the input and at the cue (``stored_similarity``; ``_held``: ``held``,
    the same DNC with its free gates held at 0)."""
    batch = task.sample(2 if quick else 16, torch.Generator().manual_seed(20_011 + seed),
                        min_length=ITEMS, max_length=ITEMS, min_delay=delay, max_delay=delay)
    start = ITEMS + 1  # the first blank step; the answer starts at start + delay
    found = dict(seed=seed, delay=delay)
    for suffix, tested in (("", model), ("_held", held)):
        with torch.no_grad():
            _, stored, trace = tested(batch.inputs[:, :start], return_trace=True)
            cued, later = stored, None
            if delay:
                _, cued, later = tested(batch.inputs[:, start : start + delay], stored,
                                        return_trace=True)
        rows = trace.write_weights.sum(dim=(1, 2)).topk(ITEMS, dim=-1).indices  # [B, ITEMS]
        index = rows.unsqueeze(-1).expand(-1, -1, stored.access.memory.shape[-1])
        similarity = torch.nn.functional.cosine_similarity(
            cued.access.memory.gather(1, index), stored.access.memory.gather(1, index), dim=-1)
        found[f"stored_similarity{suffix}"] = float(similarity.mean())
        if not suffix:
            gates = later.write_gates.mean() if delay else torch.tensor(0.0)
            used = (later.usage[:, -1] if delay else trace.usage[:, -1]).sum(-1).mean()
            found.update(write_gate=float(gates), slots_used=float(used))
    return found


def figure(out: Path, rows: list[dict[str, Any]]) -> Path:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    delays = sorted({r["delay"] for r in rows})
    for kind, label in (("dnc", "DNC"), ("dnc, free gates held at test",
                                           "DNC, free gates held at 0 at test time"),
                        ("lstm", "LSTM (DNC's parameters)")):
        stats = [spread([r["bit_error"] for r in rows if r["model"] == kind and r["delay"] == d])
                 for d in delays]
        axis.errorbar([max(d, 1) for d in delays], [m for m, _ in stats], yerr=[s for _, s in stats],
                      marker="o", capsize=3, label=label,
                      linestyle="--" if kind == "lstm" else "-")
    axis.axvline(TRAIN["max_delay"], color="gray", lw=0.8, ls=":")
    axis.set_xscale("log")
    axis.set_xlabel("blank steps between storing and recalling (log; 0 drawn at 1); dotted: "
                    "the longest delay in training")
    axis.set_ylabel("bit error (mean ± s.d. over seeds)")
    axis.set_ylim(-0.02, 0.55)
    axis.legend(fontsize=8)
    return save_figure(figure, out / "retention.png", f"recall of {ITEMS} vectors after a delay")
