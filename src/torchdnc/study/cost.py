"""Part 5, cost as memory grows: time and peak memory per training step against
N, for the dense DNC (O(N^2) links), the sparse DNC (SAM and SDNC, exact and
faiss search) and an LSTM whose state holds as many numbers as the memory
(hidden size N W / 2). Each (model, N) runs in a fresh process under a 24 GB
address-space limit (`torchdnc.bench.sparse_scaling`); slopes are fitted on
log-log axes, and where a model does not fit, the table says so."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torchdnc.bench import sparse_scaling
from torchdnc.study.common import write_rows
from torchdnc.viz.style import pyplot, save_figure

SIZES = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
MODELS = ("dense", "sam-exact", "sam-faiss", "sdnc-exact", "sdnc-faiss", "lstm")
LIMIT_GB = 24.0
SHAPE = dict(batch=8, steps=20, word=64, reads=4, sparse_reads=4, link_entries=8, hidden=128,
             inputs=8)


def run(out: Path, quick: bool = False, timeout: float = 600, **_: Any) -> dict[str, Any]:
    sizes = (10, 100) if quick else SIZES
    models = ("dense", "lstm") if quick else MODELS
    rows = []
    for model in models:
        failed = False
        for n in sizes:
            spec = dict(model=model, memory_size=n, repeats=1 if quick else 3, threads=1,
                        memory_limit_gb=LIMIT_GB, filled=False, **SHAPE)
            if quick:
                spec.update(batch=2, steps=3, word=8, hidden=16)
            if failed:  # a larger N will not fit either
                rows.append({**spec, "error": "skipped: a smaller N did not fit or finish"})
                continue
            if model.endswith("faiss") and not _has_faiss():
                rows.append({**spec, "error": "faiss not installed"})
                continue
            result = sparse_scaling.run_one(spec, timeout)
            failed = "error" in result
            rows.append(result)
            print(sparse_scaling.table([result]).splitlines()[-1], flush=True)
    fits = slopes(rows)
    written = write_rows(out, "cost", rows, {"limit_gb": LIMIT_GB, "shape": SHAPE, "slopes": fits})
    written.append(figure(out, rows, fits))
    return {"written": [str(p) for p in written], "cost": rows, "slopes": fits}


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def slopes(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Least-squares slopes of log(time) and log(peak RSS) against log(N) per model
    (over N >= 1,000 where there are two such points, else all), and the N at
    which the fitted peak memory reaches the limit."""
    fits = {}
    for model in sorted({r["model"] for r in rows}):
        ok = [r for r in rows if r["model"] == model and "error" not in r]
        big = [r for r in ok if r["memory_size"] >= 1000]
        use = big if len(big) >= 2 else ok
        if len(use) < 2:
            continue
        fit = {}
        for key, name in (("step_ms_per_step", "time"), ("peak_rss_mb", "memory")):
            slope, intercept = _line([math.log10(r["memory_size"]) for r in use],
                                     [math.log10(r[key]) for r in use])
            fit[f"{name}_slope"] = slope
            if name == "memory" and slope > 0:
                exponent = (math.log10(LIMIT_GB * 1024) - intercept) / slope
                fit["fits_until_n"] = 10 ** exponent if exponent < 30 else math.inf
        fits[model] = fit
    return fits


def _line(x: list[float], y: list[float]) -> tuple[float, float]:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    var = sum((a - mx) ** 2 for a in x)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / var if var else 0.0
    return slope, my - slope * mx


def figure(out: Path, rows: list[dict[str, Any]], fits: dict[str, dict[str, float]]) -> Path:
    plt = pyplot()
    figure, (times, memory) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = [r for r in rows if r["model"] == model and "error" not in r]
        if not ok:
            continue
        n = [r["memory_size"] for r in ok]
        fit = fits.get(model, {})
        times.plot(n, [r["step_ms_per_step"] for r in ok], marker="o",
                   label=f"{model} (slope {fit.get('time_slope', float('nan')):.2f})")
        memory.plot(n, [r["peak_rss_mb"] for r in ok], marker="o",
                    label=f"{model} (slope {fit.get('memory_slope', float('nan')):.2f})")
    for axis, label in ((times, "training step, ms per time step"), (memory, "peak RSS, MB")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("memory slots N (LSTM: as many numbers in its state)")
        axis.set_ylabel(label)
        axis.legend(fontsize=7)
    memory.axhline(LIMIT_GB * 1024, color="gray", ls=":", lw=0.8)
    return save_figure(figure, out / "cost.png", "cost per training step as memory grows")
