"""Run the experiments behind the README's results tables and print the tables.

    python benchmarks/experiments.py run copy-quick copy-full ...   # train + eval
    python benchmarks/experiments.py table                        # Markdown from runs/
    python benchmarks/experiments.py lessons traversal-quick      # curriculum, lesson by lesson
    python benchmarks/experiments.py curves dnc=RUN,RUN md=RUN --out fig.png  # curves side by side

Each experiment is one `torchdnc train` command (with its seed) followed by
`torchdnc eval`; the table is read back from the run directories
(`metrics.jsonl` for iterations and wall time, `eval.json` for the metrics), so
every number in it comes from the command printed beside it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

RUNS = Path("runs")

# name -> train arguments (after `torchdnc train`); all seeded.
EXPERIMENTS: dict[str, str] = {
    "copy-quick": "copy --preset quick --seed=0",
    "copy-full": "copy --preset full --seed=0",
    "copy-full-lstm": "copy --preset full --model=lstm --seed=0",
    "repeat_copy-full": "repeat_copy --preset full --seed=0 --threads=1",
    "associative_recall-full": "associative_recall --preset full --seed=0",
    "associative_recall-full-lstm": "associative_recall --preset full --model=lstm --seed=0",
    "priority_sort-full": "priority_sort --preset full --seed=0",
    "babi-quick": "babi --preset quick --seed=0 --threads=1",
    "babi-quick-lstm": "babi --preset quick --model=lstm --seed=0 --threads=1",
    "babi-subset": "babi --preset quick --tasks=1,4,15,16 --iterations=25000 --seed=0 --threads=1",
    "babi-joint": "babi --preset joint --seed=0 --threads=1",
    "babi-joint-renamed": "babi --preset joint --task.augment=true --seed=0 --threads=1",
    "babi-joint-lstm": "babi --preset joint --model=lstm --seed=0 --threads=1",
    # The models that come with the package (src/torchdnc/zoo, `torchdnc export`).
    "pretrained-copy": "copy --preset quick --seed=0 --threads=1",
    "pretrained-repeat_copy": "repeat_copy --preset full --iterations=100000 --seed=0 --threads=1",
    "pretrained-associative_recall": "associative_recall --preset full --seed=0 --threads=1",
    "traversal-quick": "traversal --preset quick --seed=0 --threads=1",
    "traversal-quick-lstm": "traversal --preset quick --model=lstm --seed=0 --threads=1",
    "shortest_path-quick": "shortest_path --preset quick --seed=0 --threads=1",
    "inference-quick": "inference --preset quick --seed=0 --threads=1",
    # Inference's first lesson with the levers that unstalled priority sort.
    "inference-quick-lr3e-3": "inference --preset quick --lr=3e-3 --seed=0 --threads=1",
    "inference-quick-rsdnc": "inference --preset quick --variant rsdnc --seed=0 --threads=1",
    "inference-quick-lr1e-2": "inference --preset quick --lr=1e-2 --seed=0 --threads=1",
    "inference-quick-lr3e-3-1": "inference --preset quick --lr=3e-3 --seed=1 --threads=1",
    "traversal-quick-lr3e-3": "traversal --preset quick --lr=3e-3 --seed=0 --threads=1",
    # The successors against the DNC, same preset, budget and seeds (fused kernel for both).
    **{f"variants-ar-{v}-{s}": f"associative_recall --preset full --variant {v} --seed={s} --threads=1"
       for v in ("dnc", "dnc-md", "rsdnc") for s in range(3)},
    # Csordás & Schmidhuber's repeated copy (their code's `repeat_copy` profile: 1-8 copies
    # of 2-14 8-bit vectors in one sequence, memory 16 x 16, LSTM 32, one read head):
    # the memory must be freed and reused between copies. Same budget for every model.
    **{f"variants-rcopy-{v}-{s}": "copy --preset full --task.min_blocks=1 --task.max_blocks=8 "
       "--task.min_length=2 --task.max_length=14 --curriculum=false --dnc.hidden_size=32 "
       "--dnc.memory_size=16 --dnc.word_size=16 --dnc.num_reads=1 --iterations=12000 "
       f"--eval_interval=500 {flags} --seed={s} --threads=1"
       for v, flags in (("dnc", "--variant dnc"), ("dnc-mds", "--variant dnc-mds"),
                        ("dnc-md", "--variant dnc-md"), ("dnc-s", "--dnc.sharpness=true"),
                        ("rsdnc", "--variant rsdnc"))
       for s in range(3)},
    # A bAbI subset (tasks 1, 2, 3, 4, 15, 16) at the quick size, same budget. DNC-MD
    # has a fourth seed because its seed 2 diverges (docs/semantics.md, de-allocation).
    **{f"variants-babi-{v}-{s}": "babi --preset quick --tasks=1,2,3,4,15,16 --iterations=25000 "
       f"--variant {v} --seed={s} --threads=1"
       for v, seeds in (("dnc", 3), ("dnc-md", 4), ("rsdnc", 3), ("bi-rsdnc", 3))
       for s in range(seeds)},
    # Priority sort at its first curriculum level (5 inputs -> 4 outputs), fixed.
    **{f"priority_sort-small-{v}": "priority_sort --preset full --task.num_inputs=5 "
       f"--task.num_outputs=4 --curriculum=false --iterations=8000 --eval_interval=500 "
       f"--variant {v} --seed=0 --threads=1" for v in ("dnc", "dnc-md")},
    # ... and one lever at a time against priority_sort-small-dnc (why does it stall?).
    **{f"priority_sort-small-{name}": "priority_sort --preset full --task.num_inputs=5 "
       f"--task.num_outputs=4 --curriculum=false --iterations=8000 --eval_interval=500 "
       f"{flags} --seed=0 --threads=1"
       for name, flags in (("lr3e-3", "--lr=3e-3"), ("dnc-mds", "--variant dnc-mds"),
                           ("rsdnc", "--variant rsdnc"), ("reads4", "--dnc.num_reads=4"),
                           ("noclip", "--grad_clip=0"), ("batch64", "--batch_size=64"),
                           ("lr1e-2", "--lr=1e-2"))},
    # The whole curriculum (5 -> 4 up to 20 -> 16) at the learning rate that lesson needs.
    **{f"priority_sort-lr3e-3-{s}": f"priority_sort --preset full --lr=3e-3 --seed={s} --threads=1"
       for s in range(3)},
    "priority_sort-lr3e-3-lstm": "priority_sort --preset full --lr=3e-3 --model=lstm --seed=0 --threads=1",
    **{f"priority_sort-lr3e-3-lstm-{s}": f"priority_sort --preset full --lr=3e-3 --model=lstm "
       f"--seed={s} --threads=1" for s in (1, 2)},
    # ... then 10,000 more at 1e-3 (FINE_TUNE): 3e-3 climbs the curriculum, 1e-3 settles.
    **{f"priority_sort-tuned-{s}": f"priority_sort --preset full --lr=3e-3 --seed={s} --threads=1"
       for s in range(3)},
    # SAM (no links) on copy at N = 64 (as `torchdnc.bench.sparse_learning_check`) at a
    # third of the quick preset's learning rate: is its instability at length 20 the step size?
    **{f"sam-copy-lr1e-3-{s}": "copy --preset quick --memory_size=64 --model=sparse "
       "--sparse.sparse_reads=4 --sparse.link_entries=0 --lr=1e-3 --iterations=8000 "
       f"--seed={s} --threads=1" for s in range(3)},
    # ... and at the quick preset's rate without the gradient through w^R_{t-1} in the
    # write (`write_read_gradient=false`, not the paper's; benchmarks/sam_gradient_spikes.py).
    **{f"sam-copy-nowrg-{s}": "copy --preset quick --memory_size=64 --model=sparse "
       "--sparse.sparse_reads=4 --sparse.link_entries=0 --sparse.write_read_gradient=false "
       f"--seed={s} --threads=1" for s in range(3)},
    # Mini-SHRDLU, DNC against an LSTM of about the same parameter count.
    **{f"shrdlu-quick-{s}": f"shrdlu --preset quick --seed={s} --threads=1" for s in range(3)},
    **{f"shrdlu-quick-lstm-{s}": f"shrdlu --preset quick --model=lstm --seed={s} --threads=1"
       for s in range(3)},
}


# name -> a second stage, resumed from the first with these overrides (a lower lr).
FINE_TUNE: dict[str, str] = {
    "pretrained-repeat_copy": "--iterations=110000 --lr=1e-4",
    **{f"priority_sort-tuned-{s}": "--iterations=30000 --lr=1e-3" for s in range(3)},
}


def command(name: str) -> str:
    text = f"torchdnc train {EXPERIMENTS[name]} --out runs/{name}"
    if name in FINE_TUNE:
        text += f" && torchdnc train --resume runs/{name} {FINE_TUNE[name]}"
    return text


def run(names: list[str], force: bool) -> None:
    for name in names:
        out = RUNS / name
        if out.exists() and not force:
            print(f"{name}: {out} exists, skipped (--force to rerun)")
            continue
        train = [sys.executable, "-m", "torchdnc", "train", *shlex.split(EXPERIMENTS[name]),
                 "--out", str(out), "--force", "--progress=false"]
        print("$", command(name), flush=True)
        subprocess.run(train, check=True)
        if name in FINE_TUNE:
            subprocess.run([sys.executable, "-m", "torchdnc", "train", "--resume", str(out),
                            *shlex.split(FINE_TUNE[name]), "--progress=false"], check=True)
        subprocess.run([sys.executable, "-m", "torchdnc", "eval", str(out)], check=True)


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def table(names: list[str]) -> str:
    lines = ["| experiment | command | iterations | wall time | curriculum level | solved | "
             "result at training difficulty | beyond training (N: memory slots) |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        run_dir = RUNS / name
        records = _records(run_dir)
        ends = [r for r in records if r["kind"] == "end"]
        if not ends:
            lines.append(f"| {name} | `{command(name)}` | not run | | | | | |")
            continue
        seconds = sum(r["seconds"] for r in ends)
        end = ends[-1]
        start = next(r for r in records if r["kind"] == "start")
        levels = len(start.get("curriculum", "").split("; ")) if start.get("curriculum") else 1
        report_path = run_dir / "eval.json"
        result, beyond = "", ""
        if report_path.exists():
            report = json.loads(report_path.read_text())
            if "rows" in report:
                metric = report["primary_metric"]
                extra = report.get("report_metrics", [])
                rows = report["rows"]

                def describe(row):
                    text = f"{metric} {row[metric]:.3f}"
                    return text + "".join(f", {k} {row[k]:.2%}" for k in extra)

                result = describe(rows[0])
                def where(row):
                    name = row["setting"].split(" (")[0]
                    return name if row["memory_size"] is None else f"{name} (N={row['memory_size']})"

                beyond = "; ".join(f"{where(r)}: {describe(r)}" for r in rows[1:])
            elif "per_task" in report:
                per_task = report["per_task"]
                result = f"mean question error {per_task['mean_error_percent']:.1f}%"
        lines.append(f"| {name} | `{command(name)}` | {end['step']} | {seconds / 60:.1f} min | "
                     f"{end.get('level', 0) + 1}/{levels} | {'yes' if end.get('solved') else 'no'} | "
                     f"{result} | {beyond} |")
    return "\n".join(lines)


def babi_table(names: list[str]) -> str:
    """Per-task test error of several bAbI runs side by side, beside the paper's.
    A name ``GROUP=RUN,RUN,...`` is one column: mean ± s.d. over its runs (seeds)."""
    import statistics

    def cell(values: list[float], single: str = ".1f") -> str:
        if not values:
            return "not run"
        if len(values) == 1:
            return f"{values[0]:{single}}"
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"

    columns: dict[str, list[dict]] = {}
    for name in names:
        label, _, runs = name.partition("=")
        paths = [RUNS / run / "eval.json" for run in (runs.split(",") if runs else [label])]
        columns[label] = [json.loads(p.read_text())["per_task"] for p in paths if p.exists()]
    head = "| task | " + " | ".join(f"{n} (%)" for n in columns) + " | paper DNC1 (%) | paper LSTM (%) |"
    lines = [head, "|---|" + "---:|" * len(columns) + "---:|---:|"]
    reports = [r for found in columns.values() for r in found]
    # The tasks some run was tested on (a subset run leaves the others empty).
    rows = [(i, row) for i, row in enumerate(reports[0]["rows"] if reports else [])
            if any(r["rows"][i]["error_percent"] is not None for r in reports)]
    for i, row in rows:
        cells = [cell([r["rows"][i]["error_percent"] for r in found
                       if r["rows"][i]["error_percent"] is not None]) for found in columns.values()]
        lstm = "n/a" if row["paper_lstm_mean"] is None else \
            f"{row['paper_lstm_mean']} ± {row['paper_lstm_sd']}"
        note = " †" if row.get("note") else ""
        lines.append(f"| {row['task']}: {row['name']}{note} | " + " | ".join(cells) +
                     f" | {row['paper_dnc1_mean']} ± {row['paper_dnc1_sd']} | {lstm} |")
    means = [cell([r["mean_error_percent"] for r in found]) for found in columns.values()]
    failed = [cell([r["failed"] for r in found], "g") for found in columns.values()]
    if len(rows) == 20:
        paper_mean, paper_failed = "16.7 ± 7.6 | 27.3 ± 0.8", "11.2 ± 5.4 | 17.1 ± 1.0"
    else:  # a subset: the mean of the paper's per-task means over these rows
        dnc = statistics.mean(row["paper_dnc1_mean"] for _, row in rows) if rows else 0.0
        lstm_means = [row["paper_lstm_mean"] for _, row in rows if row["paper_lstm_mean"] is not None]
        lstm = f"{statistics.mean(lstm_means):.1f}" if len(lstm_means) == len(rows) else "n/a"
        paper_mean, paper_failed = f"{dnc:.1f} | {lstm}", "n/a | n/a"
    lines.append("| mean error | " + " | ".join(means) + f" | {paper_mean} |")
    lines.append("| failed tasks (error > 5%) | " + " | ".join(failed) + f" | {paper_failed} |")
    return "\n".join(lines)


def grid(groups: dict[str, list[str]], metric: str) -> str:
    """One metric of `torchdnc eval` per setting (training memory size), mean ± s.d.
    over the runs of each group (e.g. seeds of one model)."""
    import statistics

    values: dict[str, dict[str, list[float]]] = {}
    settings: list[str] = []
    for group, names in groups.items():
        for name in names:
            path = RUNS / name / "eval.json"
            if not path.exists():
                continue
            report = json.loads(path.read_text())
            first_size = report["rows"][0]["memory_size"]
            for row in report["rows"]:
                if row["memory_size"] not in (None, first_size):
                    continue  # the memory sizes of a DNC beyond training: not this table
                setting = row["setting"].split(" (")[0]
                if setting not in settings:
                    settings.append(setting)
                values.setdefault(group, {}).setdefault(setting, []).append(row[metric])

    def cell(found: list[float]) -> str:
        if not found:
            return "not run"
        spread = statistics.stdev(found) if len(found) > 1 else 0.0
        return f"{statistics.mean(found):.2f} ± {spread:.2f} ({len(found)})"

    lines = ["| setting | " + " | ".join(f"{g}: {metric} (runs)" for g in groups) + " |",
             "|---|" + "---|" * len(groups)]
    for setting in settings:
        lines.append(f"| {setting} | " + " | ".join(cell(values.get(g, {}).get(setting, []))
                                                 for g in groups) + " |")
    return "\n".join(lines)


def curves(groups: dict[str, list[str]], metric: str, out: Path) -> Path:
    """One figure: ``metric`` at every evaluation of every run, a colour per group."""
    from torchdnc.viz import comparison_figure, save_figure

    figure = comparison_figure({g: [_records(RUNS / n) for n in names] for g, names in groups.items()},
                               metric)
    return save_figure(figure, out)


def _groups(names: list[str]) -> dict[str, list[str]]:
    """``GROUP=RUN,RUN,...`` arguments as {group: [run, ...]}, or a clear error."""
    groups = {}
    for name in names:
        group, _, runs = name.partition("=")
        if not group or not runs:
            raise SystemExit(f"expected GROUP=RUN,RUN,... (e.g. dnc=runA,runB), got {name!r}")
        groups[group] = runs.split(",")
    return groups


def _primary_metric(run_dir: Path) -> str:
    """The task's primary metric: from the evaluation report, else from the task
    named in the run's config (a run still training has no report)."""
    report_path = run_dir / "eval.json"
    if report_path.exists():
        metric = json.loads(report_path.read_text()).get("primary_metric")
        if metric:
            return metric
    from torchdnc.tasks import TASKS

    config_path = run_dir / "config.json"
    task = json.loads(config_path.read_text()).get("task") if config_path.exists() else None
    return TASKS[task].primary_metric if task in TASKS else "loss"


def _minutes_at(records: list[dict], step: int) -> float:
    """Wall-clock minutes of training up to ``step``, from the training records'
    rates (each the steps since the previous record over the time since it,
    evaluations included)."""
    seconds, last = 0.0, 0
    for r in records:
        if r["kind"] != "train" or r["step"] <= last or not r.get("it_per_s"):
            continue
        if r["step"] > step:
            break
        seconds += (r["step"] - last) / r["it_per_s"]
        last = r["step"]
    return seconds / 60


def lessons(name: str) -> str:
    """Curriculum progress of one run from its validation records: per lesson,
    the evaluations made there, the best and last validation result, and the step
    (and wall-clock minute) at which the lesson was passed."""
    run_dir = RUNS / name
    records = _records(run_dir)
    if not records:
        return f"{name}: not run"
    metric = _primary_metric(run_dir)
    start = next(r for r in records if r["kind"] == "start")
    settings = [part.split(": ", 1)[-1] for part in start.get("curriculum", "").split("; ")]
    passed = {r["level"] - 1: r["step"] for r in records if r["kind"] == "level"}
    end = [r for r in records if r["kind"] == "end"][-1:]
    lines = [f"`{command(name)}`" if name in EXPERIMENTS else f"`{run_dir}`", "",
             f"| lesson | setting | evaluations | best {metric} | last {metric} | passed at step (time) |",
             "|---|---|---|---|---|---|"]
    levels = sorted({r["level"] for r in records if r["kind"] == "eval"})
    for level in levels:
        values = [r[metric] for r in records if r["kind"] == "eval" and r["level"] == level]
        setting = settings[level] if level < len(settings) else ""
        if level in passed:
            status = f"{passed[level]} ({_minutes_at(records, passed[level]):.1f} min)"
        elif end and end[0].get("solved"):
            status = f"{end[0]['step']} (solved)"
        else:
            status = "not passed"
        lines.append(f"| {level + 1} | {setting} | {len(values)} | {min(values):.3f} | "
                     f"{values[-1]:.3f} | {status} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="train and evaluate experiments")
    run_parser.add_argument("names", nargs="*", help=f"default: all of {list(EXPERIMENTS)}")
    run_parser.add_argument("--force", action="store_true", help="rerun existing runs")
    table_parser = sub.add_parser("table", help="print the results table")
    table_parser.add_argument("names", nargs="*")
    lessons_parser = sub.add_parser("lessons", help="print a run's curriculum progress")
    lessons_parser.add_argument("names", nargs="*")
    babi_parser = sub.add_parser("babi", help="per-task bAbI table of several runs (RUN, or "
                                              "GROUP=RUN,RUN,... for mean ± s.d.)")
    babi_parser.add_argument("names", nargs="*")
    grid_parser = sub.add_parser("grid", help="a metric per evaluation setting, mean over "
                                              "runs: GROUP=RUN,RUN,... per column")
    grid_parser.add_argument("names", nargs="*", metavar="GROUP=RUNS")
    grid_parser.add_argument("--metric", default="success")
    curves_parser = sub.add_parser("curves", help="a metric against iteration for several runs, "
                                                  "GROUP=RUN,RUN,... per colour, as a PNG")
    curves_parser.add_argument("names", nargs="*", metavar="GROUP=RUNS")
    curves_parser.add_argument("--metric", default="bit_error")
    curves_parser.add_argument("--out", type=Path, default=Path("curves.png"))
    args = parser.parse_args()
    names = args.names or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if args.action in ("babi", "grid", "curves"):
        unknown = []
    if args.action == "lessons":  # any run directory under runs/ will do
        missing = [str(RUNS / n / "metrics.jsonl") for n in names
                   if not (RUNS / n / "metrics.jsonl").exists()]
        if missing:
            parser.error(f"no such run record(s): {missing}")
        unknown = []
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; valid: {list(EXPERIMENTS)}")
    if args.action == "run":
        run(names, args.force)
    elif args.action == "lessons":
        print("\n\n".join(lessons(name) for name in names))
    elif args.action == "babi":
        print(babi_table(names))
    elif args.action == "curves":
        groups = _groups(names)
        missing = [str(RUNS / n / "metrics.jsonl") for runs in groups.values() for n in runs
                   if not (RUNS / n / "metrics.jsonl").exists()]
        if missing:
            parser.error(f"no such run record(s): {missing}")
        print(f"written: {curves(groups, args.metric, args.out)}")
    elif args.action == "grid":
        print(grid(_groups(names), args.metric))
    else:
        print(table(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
