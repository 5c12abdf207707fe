"""``torchdnc bench``: speed and memory of the DNC beside baselines.

Every (configuration, implementation) pair runs in a fresh subprocess, so that
its peak resident memory (RSS on CPU, max allocated on GPU) is its own. Times
are medians over ``repeats`` runs after two warm-up runs (which include any
one-off compilation; its time is reported separately as ``first_call_s``).
Each implementation runs as torchdnc trains with it: the fused kernel gets the
threads and torch's ops around it one (`torchdnc.kernels.fused.take_threads`);
everything else runs with torch's threads. ``--neighbour`` measures beside a
CPU-bound single-threaded process; the ``step loop`` column is `DNC.step` called
once per time step without gradients (reinforcement learning, decoding).

Baselines in the same run: ``lstmcell`` (an `nn.LSTMCell` of the controller's
size stepped in Python, plus a linear read-out), ``lstm`` (the fused
`nn.LSTM`), and ``pypi-dnc`` (the PyPI package ``dnc`` 1.1.0 at a matched
configuration, only when it is installed: ``pip install dnc==1.1.0 --no-deps``).
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

# Named configurations: (a) and (b) from the speed issue, (c) the bAbI paper preset
# at a typical story length (median story lengths of the 20 tasks are 24-432 words).
CONFIGS: dict[str, dict[str, int]] = {
    "a": dict(hidden_size=64, memory_size=16, word_size=16, num_reads=4, num_writes=1,
              batch=16, steps=40, inputs=8, outputs=8),
    "b": dict(hidden_size=256, memory_size=256, word_size=64, num_reads=4, num_writes=1,
              batch=32, steps=50, inputs=8, outputs=8),
    "c": dict(hidden_size=256, memory_size=256, word_size=64, num_reads=4, num_writes=1,
              batch=16, steps=120, inputs=159, outputs=159),
}
IMPLEMENTATIONS = ("fused", "plain", "compile")
BASELINES = ("lstmcell", "lstm", "pypi-dnc")


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _build(kind: str, c: dict[str, int], device):
    import torch
    from torch import nn

    from torchdnc import DNC

    if kind in IMPLEMENTATIONS:
        model = DNC(input_size=c["inputs"], output_size=c["outputs"], hidden_size=c["hidden_size"],
                    memory_size=c["memory_size"], word_size=c["word_size"],
                    num_reads=c["num_reads"], num_writes=c["num_writes"], implementation=kind,
                    **c.get("variant_options", {}))
        model = model.to(device)
        run = lambda x: model(x)[0]  # noqa: E731

        def stepped(x):  # one `step` call per time step, as reinforcement learning runs it
            state, outputs = None, []
            for t in range(x.shape[1]):
                y, state = model.step(x[:, t], state)
                outputs.append(y)
            return torch.stack(outputs, 1)

        if not model.config.bidirectional:  # a bidirectional model has no step mode
            run.stepped = stepped
        return model, run
    if kind == "lstm":
        rnn = nn.LSTM(c["inputs"], c["hidden_size"], batch_first=True).to(device)
        head = nn.Linear(c["hidden_size"], c["outputs"]).to(device)
        model = nn.ModuleList([rnn, head])
        return model, lambda x: head(rnn(x)[0])
    if kind == "lstmcell":
        cell = nn.LSTMCell(c["inputs"], c["hidden_size"]).to(device)
        head = nn.Linear(c["hidden_size"], c["outputs"]).to(device)
        model = nn.ModuleList([cell, head])

        def run(x):
            h = x.new_zeros(x.shape[0], c["hidden_size"])
            state = (h, h)
            outputs = []
            for t in range(x.shape[1]):
                state = cell(x[:, t], state)
                outputs.append(state[0])
            return head(torch.stack(outputs, 1))

        return model, run
    if kind == "pypi-dnc":
        from dnc import DNC as PyPIDNC  # the PyPI package "dnc"

        if c["inputs"] != c["outputs"]:
            raise ValueError("pypi-dnc: its output size equals its input size")
        model = PyPIDNC(c["inputs"], c["hidden_size"], rnn_type="lstm", num_layers=1,
                        nr_cells=c["memory_size"], cell_size=c["word_size"],
                        read_heads=c["num_reads"], batch_first=True,
                        gpu_id=0 if device.type == "cuda" else -1).to(device)
        return model, lambda x: model(x, (None, None, None), reset_experience=True)[0]
    raise ValueError(f"unknown implementation {kind!r}; valid: {IMPLEMENTATIONS + BASELINES}")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this process (the worker side)."""
    import torch
    import torch.nn.functional as F

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("kernel_threads"):
        from torchdnc.kernels import fused

        fused.set_threads(spec["kernel_threads"])
    device = torch.device(spec.get("device", "cpu"))
    cuda = device.type == "cuda"
    c = dict(spec["config"])
    torch.manual_seed(0)
    model, run = _build(spec["implementation"], c, device)
    if device.type == "cpu" and getattr(model, "_kernel_applies", lambda: False)() \
            and not spec.get("kernel_threads"):
        from torchdnc.kernels import fused

        fused.take_threads()  # as the training loop runs a model on the kernel
    x = torch.randint(0, 2, (c["batch"], c["steps"], c["inputs"]), device=device).float()
    target = torch.randint(0, 2, (c["batch"], c["steps"], c["outputs"]), device=device).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    parameters = sum(p.numel() for p in model.parameters())
    base_rss = _rss_mb()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def train_step():
        loss = F.binary_cross_entropy_with_logits(run(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward():
        run(x)

    def inference():
        with torch.no_grad():
            run(x)

    def stepped():
        with torch.no_grad():
            run.stepped(x)

    def timed(fn, repeats):
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return times

    start = time.perf_counter()
    train_step()
    sync()
    first_call = time.perf_counter() - start
    train_step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    repeats = spec.get("repeats", 10)
    result: dict[str, Any] = {}
    measured = [("train", train_step), ("forward", forward), ("inference", inference)]
    if hasattr(run, "stepped"):
        stepped()
        measured.append(("step_loop", stepped))
    for name, fn in measured:
        times = timed(fn, repeats)
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        result[f"{name}_s"] = statistics.median(times)
        result[f"{name}_iqr_s"] = [quartiles[0], quartiles[2]]
    result.update(
        first_call_s=first_call, parameters=parameters, base_rss_mb=base_rss,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        threads=torch.get_num_threads(), torch=torch.__version__,
    )
    if spec["implementation"] == "fused":
        from torchdnc.kernels import fused

        result["fused_active"] = fused.available() and device.type == "cpu"
        result["build_s"] = fused.BUILD_SECONDS
    return result


def run_one(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``measure`` in a fresh subprocess; failures come back as ``error``."""
    command = [sys.executable, "-m", "torchdnc.bench.speed", "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        message = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**spec, "error": message}
    return {**spec, **json.loads(lines[-1])}


def pypi_dnc_installed() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("dnc")
    return spec is not None


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table; ratios are against the fastest baseline DNC of the same config."""
    lines = ["| config | implementation | train step (s) | forward (s) | inference (s) | "
             "step loop (s) | peak memory (MB) | first call (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        name = r["name"]
        if "error" in r:
            lines.append(f"| {name} | {r['implementation']} | error: {r['error']} | | | | | |")
            continue
        low, high = r["train_iqr_s"]
        memory = r["peak_gpu_mb"] if r.get("peak_gpu_mb") is not None else r["peak_rss_mb"]
        step = f"{r['step_loop_s']:.4f}" if "step_loop_s" in r else "-"
        lines.append(
            f"| {name} | {r['implementation']} | {r['train_s']:.4f} ({low:.4f}-{high:.4f}) | "
            f"{r['forward_s']:.4f} | {r['inference_s']:.4f} | {step} | {memory:.0f} | "
            f"{r['first_call_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchdnc bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--configs", default="a,b",
                        help="comma-separated names (a, b, c) (default a,b)")
    parser.add_argument("--implementations", default="fused,plain",
                        help=f"comma-separated, of {', '.join(IMPLEMENTATIONS)} (default fused,plain)")
    parser.add_argument("--baselines", default="lstmcell,lstm,pypi-dnc",
                        help="comma-separated, of lstmcell, lstm, pypi-dnc; '' for none")
    parser.add_argument("--steps", default="", help="override T, comma-separated (e.g. 50,100,200)")
    parser.add_argument("--batch", type=int, default=0, help="override the batch size")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs each (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--variant", default="dnc",
                        help="DNC variant for the torchdnc rows (dnc, dnc-md, dnc-mds, rsdnc, ...)")
    parser.add_argument("--kernel-threads", type=int, default=0,
                        help="fused kernel threads (default: as torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--neighbour", action="store_true",
                        help="measure beside a CPU-bound single-threaded process (a busy "
                             "neighbour on a shared machine)")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))), flush=True)
        return 0
    from torchdnc.training.config import VARIANTS

    if args.variant not in VARIANTS:
        parser.error(f"--variant: expected one of {list(VARIANTS)}, got {args.variant!r}")
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; valid: {sorted(CONFIGS)}")
    kinds = [k for k in args.implementations.split(",") if k]
    baselines = [k for k in args.baselines.split(",") if k]
    bad = [k for k in kinds if k not in IMPLEMENTATIONS] + [k for k in baselines if k not in BASELINES]
    if bad:
        parser.error(f"unknown implementation(s) {bad}; valid: {IMPLEMENTATIONS + BASELINES}")
    if "pypi-dnc" in baselines and not pypi_dnc_installed():
        print("pypi-dnc: not installed (pip install dnc==1.1.0 --no-deps); skipped", file=sys.stderr)
        baselines.remove("pypi-dnc")
    steps_list = [int(s) for s in args.steps.split(",") if s] or [None]
    results = []
    from tqdm import tqdm

    jobs = []
    for name in names:
        for steps in steps_list:
            config = dict(CONFIGS[name])
            if steps:
                config["steps"] = steps
            if args.batch:
                config["batch"] = args.batch
            label = name if steps is None else f"{name} T={steps}"
            if args.variant != "dnc":
                config["variant_options"] = VARIANTS[args.variant]
                label += f" {args.variant}"
            for kind in kinds + baselines:
                if kind == "pypi-dnc" and config["inputs"] != config["outputs"]:
                    continue
                jobs.append({"name": label, "config": config, "implementation": kind,
                             "repeats": args.repeats, "threads": args.threads,
                             "kernel_threads": args.kernel_threads, "device": args.device})
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) \
        if args.neighbour else None
    try:
        for job in tqdm(jobs, desc="bench" + (" beside a busy neighbour" if neighbour else ""),
                        dynamic_ncols=True):
            results.append({**run_one(job, args.timeout), "neighbour": bool(neighbour)})
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    print(table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
