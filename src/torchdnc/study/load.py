"""Part 1, load beyond the controller, and part 4, memory size at test time.

Does the DNC's capacity follow its memory N rather than its controller? A DNC
with a small controller (LSTM 64) is trained on copy (lengths up to 20) and on
associative recall (up to 6 items); then, with the same weights, it is tested
on ever more items with N set to ¼, ½, 1, 2 and 4 times the items. Beside it:
an LSTM with the DNC's parameter count and a "super-LSTM" with ten times as
many, trained the same way. A second sweep changes the controller size H at a
fixed number of items: does the DNC's error depend on H, and the LSTM's?

Part 4 draws the Extended Data Fig. 2 heat map from the same DNCs: the share of
perfectly answered sequences over (test-time N) x (items).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchdnc.baselines import lstm_hidden_for_parameters
from torchdnc.dnc import DNC
from torchdnc.study.common import (Run, load, score, spread, summary_table, train_all, write_rows,
                                   write_summary)
from torchdnc.viz.style import pyplot, save_figure

# Copy: the quick preset's DNC (LSTM 64) with W 16; trained N 24 (lengths <= 20).
TASKS = {
    "copy": dict(task="copy", preset="quick", train_items=20, item_key="length",
                 overrides={"word_size": 16, "memory_size": 24, "iterations": 3000}),
    # Associative recall: the full preset's DNC with LSTM 64 and N 32, at Adam 1e-2. At
    # the preset's 1e-3 no model got past the second of five levels in 6,000 iterations;
    # at 3e-3 a DNC reached level 4 (1.8 wrong bits); at 1e-2 all three seeds reach 6
    # items with 0.03-0.2 wrong bits by 5,000-6,000 iterations (about 90 s each).
    "associative_recall": dict(task="associative_recall", preset="full", train_items=6,
                               item_key="items",
                               overrides={"hidden_size": 64, "memory_size": 32, "lr": 1e-2,
                                          "iterations": 8000, "eval_interval": 250}),
}
MULTIPLES = (0.25, 0.5, 1, 2, 4)
ITEMS = {"copy": (5, 10, 20, 40, 80), "associative_recall": (2, 4, 6, 8, 12, 16)}
HIDDEN = (16, 32, 64, 128, 256)
HIDDEN_TASKS = ("copy",)  # the controller-size sweep (30 trainings a task) on copy only
SUPER = 10  # the super-LSTM's parameters, in multiples of the DNC's


def _params(task: str, items: int) -> dict[str, Any]:
    key = TASKS[task]["item_key"]
    return {f"min_{key}": items, f"max_{key}": items}


def runs(task: str, seeds: int, quick: bool) -> list[Run]:
    spec = TASKS[task]
    base = dict(spec["overrides"])
    if quick:
        base.update(iterations=20, eval_interval=10, eval_batches=1)
    found = []
    for seed in range(seeds):
        common = {**base, "seed": seed}
        found.append(Run(f"{task}-dnc-s{seed}", spec["task"], spec["preset"], common))
        found.append(Run(f"{task}-lstm-s{seed}", spec["task"], spec["preset"],
                         {**common, "model": "lstm"}))
        found.append(Run(f"{task}-superlstm-s{seed}", spec["task"], spec["preset"],
                         {**common, "model": "lstm", "lstm_hidden_size": 0, "_super": True}))
    return found


def _resolve_super(run: Run) -> Run:
    """The super-LSTM: the hidden size whose LSTM has SUPER times the DNC's parameters."""
    if not run.overrides.pop("_super", False):
        return run
    config = run.config()
    task = config.make_task()
    dnc = sum(p.numel() for p in DNC(config.dnc_config(task)).parameters())
    hidden = lstm_hidden_for_parameters(task.input_size, task.output_size, SUPER * dnc)
    run.overrides["lstm_hidden_size"] = hidden
    return run


def hidden_runs(task: str, seeds: int, quick: bool) -> list[Run]:
    spec = TASKS[task]
    base = dict(spec["overrides"])
    if quick:
        base.update(iterations=20, eval_interval=10, eval_batches=1)
    found = []
    for hidden in (HIDDEN[:2] if quick else HIDDEN):
        for seed in range(seeds):
            common = {**base, "seed": seed, "hidden_size": hidden}
            found.append(Run(f"{task}-dnc-h{hidden}-s{seed}", spec["task"], spec["preset"], common))
            found.append(Run(f"{task}-lstm-h{hidden}-s{seed}", spec["task"], spec["preset"],
                             {**common, "model": "lstm", "lstm_hidden_size": hidden}))
    return found


def run(out: Path, seeds: int = 3, quick: bool = False, jobs: int = 2,
        tasks: tuple[str, ...] = ("copy", "associative_recall")) -> dict[str, Any]:
    """Train, test, write ``load.csv`` / ``load.json`` / ``hidden.*`` / ``memory_size.*``
    and the figures into ``out``."""
    batches, batch_size = (1, 8) if quick else (8, 32)
    results: dict[str, Any] = {"load": [], "hidden": [], "memory_size": []}
    for task in tasks:
        items = ITEMS[task][:2] if quick else ITEMS[task]
        trained = train_all([_resolve_super(r) for r in runs(task, seeds, quick)],
                            out / "runs", jobs)
        for name, path in trained.items():
            config, task_object, model = load(path)
            kind = name.split("-")[-2]
            seed = int(name.rsplit("-s", 1)[1])
            parameters = sum(p.numel() for p in model.parameters())
            for k in items:
                if kind == "dnc":
                    for multiple in MULTIPLES:
                        n = max(1, round(multiple * k))
                        m = score(model.with_memory_size(n), task_object, _params(task, k),
                                  batches, batch_size, seed)
                        results["load"].append(dict(task=task, model="dnc", seed=seed, items=k,
                                                    memory_multiple=multiple, memory_size=n,
                                                    parameters=parameters, **_pick(m)))
                else:
                    m = score(model, task_object, _params(task, k), batches, batch_size, seed)
                    results["load"].append(dict(task=task, model=kind, seed=seed, items=k,
                                                memory_multiple=None, memory_size=None,
                                                parameters=parameters, **_pick(m)))
            if kind == "dnc":  # part 4: N x items
                for n in (8, 16, 32, 64, 128) if not quick else (8, 16):
                    for k in items:
                        m = score(model.with_memory_size(n), task_object, _params(task, k),
                                  batches, batch_size, seed)
                        results["memory_size"].append(dict(task=task, seed=seed, memory_size=n,
                                                           items=k, **_pick(m)))
        fixed = TASKS[task]["train_items"]
        swept = hidden_runs(task, seeds, quick) if task in HIDDEN_TASKS else []
        for name, path in train_all(swept, out / "runs", jobs).items():
            _, task_object, model = load(path)
            kind, hidden = name.split("-")[1], int(name.split("-h")[1].split("-")[0])
            seed = int(name.rsplit("-s", 1)[1])
            for k in (fixed, 2 * fixed):
                test = model.with_memory_size(2 * k) if kind == "dnc" else model
                m = score(test, task_object, _params(task, k), batches, batch_size, seed)
                results["hidden"].append(dict(task=task, model=kind, hidden=hidden, seed=seed,
                                              items=k, memory_size=2 * k if kind == "dnc" else None,
                                              **_pick(m)))
    meta = {"seeds": seeds, "quick": quick, "tasks": list(tasks)}
    written = []
    for name, rows in results.items():
        written += write_rows(out, name, rows, meta)
    written += figures(out, results, tasks)
    written.append(write_summary(out, "torchdnc study load", [
        summary_table(results["load"], ("task", "model", "memory_multiple", "items"),
                      ("bit_error", "perfect"), "error against items (N = multiple x items)"),
        summary_table(results["hidden"], ("task", "model", "hidden", "items"), ("bit_error",),
                      "error against controller size"),
        summary_table(results["memory_size"], ("task", "memory_size", "items"), ("perfect",),
                      "perfectly answered sequences: test-time N x items")]))
    return {"written": [str(p) for p in written], **results}


def _pick(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in ("bit_error", "bits_per_sequence", "perfect") if k in metrics}


def figures(out: Path, results: dict[str, Any], tasks: tuple[str, ...]) -> list[Path]:
    plt = pyplot()
    written = []
    for task in tasks:
        rows = [r for r in results["load"] if r["task"] == task]
        if not rows:
            continue
        figure, axis = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
        items = sorted({r["items"] for r in rows})
        curves = [("dnc", m) for m in MULTIPLES] + [("lstm", None), ("superlstm", None)]
        for kind, multiple in curves:
            chosen = [r for r in rows if r["model"] == kind and r["memory_multiple"] == multiple]
            if not chosen:
                continue
            stats = [spread([r["bit_error"] for r in chosen if r["items"] == k]) for k in items]
            label = f"DNC, N = {multiple:g} x items" if kind == "dnc" else \
                {"lstm": "LSTM (DNC's parameters)", "superlstm": f"LSTM, {SUPER}x parameters"}[kind]
            style = "-" if kind == "dnc" else "--"
            axis.errorbar(items, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
                          linestyle=style, capsize=3, label=label)
        axis.axvline(TASKS[task]["train_items"], color="gray", lw=0.8, ls=":")
        axis.set_xscale("log", base=2)
        axis.set_xlabel(f"items ({TASKS[task]['item_key']}); dotted: the training maximum")
        axis.set_ylabel("bit error (mean ± s.d. over seeds)")
        axis.set_ylim(-0.02, 0.55)
        axis.legend(fontsize=7)
        written.append(save_figure(figure, out / f"load-{task}.png", f"{task}: error against load"))
        hidden_rows = [r for r in results["hidden"] if r["task"] == task]
        if hidden_rows:
            figure, axis = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
            for kind in ("dnc", "lstm"):
                for k in sorted({r["items"] for r in hidden_rows}):
                    chosen = [r for r in hidden_rows if r["model"] == kind and r["items"] == k]
                    sizes = sorted({r["hidden"] for r in chosen})
                    stats = [spread([r["bit_error"] for r in chosen if r["hidden"] == h]) for h in sizes]
                    axis.errorbar(sizes, [m for m, _ in stats], yerr=[s for _, s in stats],
                                  marker="o", capsize=3, linestyle="-" if kind == "dnc" else "--",
                                  label=f"{kind.upper()}, {k} items"
                                        + (f" (N = {2 * k})" if kind == "dnc" else ""))
            axis.set_xscale("log", base=2)
            axis.set_xlabel("controller / LSTM hidden size H")
            axis.set_ylabel("bit error")
            axis.legend(fontsize=7)
            written.append(save_figure(figure, out / f"hidden-{task}.png",
                                       f"{task}: error against controller size"))
        size_rows = [r for r in results["memory_size"] if r["task"] == task]
        if size_rows:
            sizes = sorted({r["memory_size"] for r in size_rows})
            items = sorted({r["items"] for r in size_rows})
            grid = [[spread([r["perfect"] for r in size_rows if r["memory_size"] == n
                             and r["items"] == k])[0] for k in items] for n in sizes]
            figure, axis = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
            image = axis.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=1, aspect="auto")
            axis.set_xticks(range(len(items)))
            axis.set_xticklabels(items)
            axis.set_yticks(range(len(sizes)))
            axis.set_yticklabels(sizes)
            for i in range(len(sizes)):
                for j in range(len(items)):
                    axis.text(j, i, f"{grid[i][j]:.2f}", ha="center", va="center", fontsize=7,
                              color="white" if grid[i][j] < 0.6 else "black")
            axis.set_xlabel("items")
            axis.set_ylabel("memory size N at test time")
            figure.colorbar(image, label="perfectly answered sequences")
            written.append(save_figure(figure, out / f"memory_size-{task}.png",
                                       f"{task}: trained with N = "
                                       f"{TASKS[task]['overrides']['memory_size']}"))
    return written
