"""Time and memory per step against memory size N: the dense DNC beside the sparse one.

    python -m torchdnc.bench.sparse_scaling --plot sparse_scaling.png --json sparse_scaling.json

For every (model, N) pair a fresh subprocess builds the model, allocates a
fresh state (timed apart as ``reset``: the O(N W) memory allocation every
sequence needs) and runs forward + backward over T steps; times are medians
over ``--repeats`` runs after one warm-up run, divided by T. Memory:

- ``graph``: bytes autograd keeps for backward (the storages of the saved
  tensors, through `torch.autograd.graph.saved_tensors_hooks`, each once and
  without the parameters, plus the sparse journal's row ids), per step;
- ``extra RSS``: growth of the peak resident set during forward + backward
  above the resident set with the state allocated (Linux ``clear_refs``),
  for the whole sequence: transient buffers of the search and one-off
  allocations, which do not grow with T;
- ``peak RSS``: of the whole process.

Models: ``dense`` (`torchdnc.DNC`, implementation "auto": the fused C++
recurrence where it builds), ``sam-exact`` / ``sam-faiss`` (SparseDNC without
links, exact or faiss index), ``sdnc-exact`` / ``sdnc-faiss`` (with
``--link-entries`` links), ``lstm`` (the LSTM baseline with as many numbers in
its state, h and c, as the memory holds: hidden size N W / 2). faiss models are skipped when faiss is absent; the
dense DNC is skipped where its link matrices alone exceed ``--memory-limit-gb``
and otherwise run under that address-space limit, so that an allocation that
does not fit fails cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

MODELS = ("dense", "sam-exact", "sam-faiss", "sdnc-exact", "sdnc-faiss", "lstm")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _build(spec: dict[str, Any]):
    import torch

    from torchdnc import DNC
    from torchdnc.sparse import SparseDNC

    common = dict(input_size=spec["inputs"], output_size=spec["inputs"], hidden_size=spec["hidden"],
                  memory_size=spec["memory_size"], word_size=spec["word"], num_reads=spec["reads"])
    torch.manual_seed(0)
    kind = spec["model"]
    if kind == "lstm":
        from torchdnc.baselines import LSTMBaseline

        hidden = max(1, spec["memory_size"] * spec["word"] // 2)
        model = LSTMBaseline(spec["inputs"], spec["inputs"], hidden)
        model.initial_state = lambda batch: None
        return model
    if kind == "dense":
        return DNC(**common, num_writes=1, implementation="auto")
    index = kind.split("-")[1]
    links = spec["link_entries"] if kind.startswith("sdnc") else 0
    return SparseDNC(**common, sparse_reads=spec["sparse_reads"], link_entries=links, index=index)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this process (the worker side)."""
    if spec.get("memory_limit_gb"):
        limit = int(spec["memory_limit_gb"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    torch.set_num_threads(spec["threads"])
    if spec["model"].endswith("faiss"):
        import faiss

        faiss.omp_set_num_threads(spec["threads"])
    model = _build(spec)
    batch, steps = spec["batch"], spec["steps"]
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (batch, steps, spec["inputs"]), generator=generator).float()
    target = torch.randint(0, 2, (batch, steps, spec["inputs"]), generator=generator).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        # Count each storage once and leave out the parameters, which every
        # step saves again without using more memory.
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    carried: dict[str, Any] = {}
    if spec.get("filled"):
        # A memory full of random rows, indexed once; every run continues from the
        # state the previous one left (the sparse memory stays full), so the
        # search works on all N rows, not only on those written so far.
        carried["state"] = model.initial_state(batch)
        with torch.no_grad():
            memory = carried["state"].access.memory
            for b in range(batch):
                memory[b].normal_(generator=generator)
        if hasattr(model, "index"):
            model.index.prepare(memory)

    def run(count_graph: bool = False):
        start = time.perf_counter()
        state = carried["state"] if carried else model.initial_state(batch)
        allocated = time.perf_counter()
        rss_before = _status_mb("VmRSS")
        peak_ok = _reset_peak_rss()
        saved.clear()
        if count_graph:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                y, final = model(x, state)
        else:
            y, final = model(x, state)
        forward = time.perf_counter()
        loss_fn(y, target).backward()
        done = time.perf_counter()
        extra = _status_mb("VmHWM") - rss_before if peak_ok else float("nan")
        if carried:
            carried["state"] = final.detach()
        journal = 0
        if count_graph and hasattr(model, "index"):
            journal = _journal_bytes(final)
        model.zero_grad(set_to_none=True)
        return dict(reset_s=allocated - start, forward_s=forward - allocated,
                    step_s=done - allocated, extra_rss_mb=extra,
                    graph_bytes=sum(saved.values()) + journal)

    first = run()
    runs = [run() for _ in range(spec["repeats"])]
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Last: the hooks' saved tensors can keep this run's graph (and state)
    # alive a little longer than usual, which must not show in the peak RSS.
    graph = run(count_graph=True)
    return dict(
        forward_ms_per_step=1000 * median["forward_s"] / steps,
        step_ms_per_step=1000 * median["step_s"] / steps,
        step_ms_runs=[1000 * r["step_s"] / steps for r in runs],
        reset_s=median["reset_s"], first_step_ms=1000 * first["step_s"] / steps,
        graph_kb_per_step=graph["graph_bytes"] / steps / 1024,
        extra_rss_mb=median["extra_rss_mb"],
        peak_rss_mb=peak_rss_mb,
        threads=torch.get_num_threads(), torch=torch.__version__,
    )


def _journal_bytes(state) -> int:
    """Row ids the sparse journal keeps: found through the final memory's graph node."""
    node = state.access.memory.grad_fn
    tape = getattr(node, "tape", None)
    if tape is None:
        return 0
    return sum(ids.numel() * ids.element_size() for touched in tape.touched for ids in touched)


def run_one(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """`measure` in a fresh subprocess; failures come back as ``error``."""
    command = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        message = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return {**spec, "error": message[:160]}
    return {**spec, **json.loads(lines[-1])}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | N | fwd+bwd ms/step | fwd ms/step | reset s | graph KB/step | "
             "extra RSS MB | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        head = f"| {r['model']} | {r['memory_size']:,} |"
        if "error" in r:
            lines.append(f"{head} {r['error']} | | | | | |")
            continue
        lines.append(
            f"{head} {r['step_ms_per_step']:.2f} | {r['forward_ms_per_step']:.2f} | "
            f"{r['reset_s']:.2f} | {r['graph_kb_per_step']:.1f} | "
            f"{r['extra_rss_mb']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(19, 4.5))
    panels = [("step_ms_per_step", "forward + backward per step (ms)"),
              ("graph_kb_per_step", "saved for backward per step (KB)"),
              ("extra_rss_mb", "RSS growth in fwd + bwd (MB)"),
              ("peak_rss_mb", "peak RSS (MB)")]
    for axis, (key, label) in zip(axes, panels):
        for model in dict.fromkeys(r["model"] for r in results):
            points = [(r["memory_size"], r[key]) for r in results
                      if r["model"] == model and "error" not in r and r.get(key, 0) > 0]
            if points:
                axis.plot(*zip(*points), marker="o", label=model)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("memory slots N")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000",
                        help="memory sizes N, comma-separated")
    parser.add_argument("--models", default="dense,sam-exact,sam-faiss,sdnc-faiss",
                        help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="T")
    parser.add_argument("--word", type=int, default=64, help="W")
    parser.add_argument("--reads", type=int, default=4, help="R")
    parser.add_argument("--sparse-reads", type=int, default=4, help="K")
    parser.add_argument("--link-entries", type=int, default=8, help="K_L of the sdnc models")
    parser.add_argument("--hidden", type=int, default=128, help="controller LSTM size")
    parser.add_argument("--inputs", type=int, default=8, help="input and output size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch (and faiss) threads")
    parser.add_argument("--filled", action="store_true",
                        help="start from a memory full of random rows (indexed once, before "
                             "timing) instead of an empty one")
    parser.add_argument("--memory-limit-gb", type=float, default=14.0,
                        help="address-space limit per measurement (0: none)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="write a log-log plot here (png, pdf, svg)")
    parser.add_argument("--replot", metavar="JSON",
                        help="only redraw --plot (and the table) from an earlier --json file")
    args = parser.parse_args(argv)
    if args.replot:
        results = json.load(open(args.replot))
        print(table(results))
        if args.plot:
            first = results[0]
            plot(results, args.plot, f"B={first['batch']}, T={first['steps']}, W={first['word']}, "
                                     f"R={first['reads']}, K={first['sparse_reads']}, "
                                     f"{first['threads']} thread(s)")
        return 0
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))), flush=True)
        return 0
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")
    try:
        import faiss  # noqa: F401
    except ImportError:
        skipped = [m for m in models if m.endswith("faiss")]
        if skipped:
            print(f"faiss not installed (pip install faiss-cpu): skipping {skipped}", file=sys.stderr)
        models = [m for m in models if not m.endswith("faiss")]
    results = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        for model in models:
            spec = dict(model=model, memory_size=size, batch=args.batch, steps=args.steps,
                        word=args.word, reads=args.reads, sparse_reads=args.sparse_reads,
                        link_entries=args.link_entries, hidden=args.hidden, inputs=args.inputs,
                        repeats=args.repeats, threads=args.threads,
                        memory_limit_gb=args.memory_limit_gb, filled=args.filled)
            link_gb = args.batch * size * size * 4 / 2**30
            if model == "dense" and args.memory_limit_gb and link_gb > args.memory_limit_gb:
                result = {**spec, "error": f"does not fit: one link matrix is {link_gb:,.0f} GB"}
            else:
                result = run_one(spec, args.timeout)
            results.append(result)
            print(table([result]).splitlines()[-1], flush=True)
    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"written: {args.json}")
    if args.plot:
        plot(results, args.plot, f"B={args.batch}, T={args.steps}, W={args.word}, R={args.reads}, "
                                 f"K={args.sparse_reads}, {args.threads} thread(s)")
        print(f"written: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
