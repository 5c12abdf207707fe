"""The ``torchdnc`` command: train, eval, plot, tasks, info, demo."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

import torch

import torchdnc
from torchdnc.bench.speed import main as bench_main
from torchdnc.dnc import DNC, DNCConfig
from torchdnc.evaluation import evaluate_run, to_markdown, write_report
from torchdnc.kernels import fused
from torchdnc.tasks import TASKS
from torchdnc.training import CheckpointError, RunError, train
from torchdnc.training.config import (TrainConfig, apply_overrides, load_config_file, model_defaults,
                                      parse_override_args, presets_for, resolve_config)
from torchdnc import study, zoo
from torchdnc.data import download, london
from torchdnc.training.runs import export_pretrained, load_run_config
from torchdnc.viz import plot_run


def _train_epilog() -> str:
    lines = ["options (--key=value; defaults shown, presets change some of them):"]
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("dnc", "task_options", "task", "preset"):
            continue
        lines.append(f"  --{f.name}={getattr(TrainConfig(), f.name)}")
    lines.append("model (DNC) options, also as --dnc.NAME=VALUE:")
    lines += [f"  --{k}={v}" for k, v in model_defaults().items()]
    lines.append("task options, also as --task.NAME=VALUE: see `torchdnc tasks`")
    lines.append("a --config FILE (YAML or JSON) may hold any of these; the command line wins")
    return "\n".join(lines)


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    overrides = parse_override_args(extra)
    if args.resume:
        run_dir = Path(args.resume)
        stored = load_run_config(run_dir)
        values = stored.to_dict()
        if args.config:
            values = apply_overrides(values, load_config_file(args.config))
        config = TrainConfig.from_dict(apply_overrides(values, overrides))
        if args.task and args.task != stored.task:
            raise ValueError(f"cannot resume {run_dir}: it trains {stored.task!r}, not {args.task!r}")
    else:
        if not args.task:
            raise ValueError("train: name a task (see `torchdnc tasks`) or pass --resume RUN_DIR")
        config = resolve_config(args.task, args.preset, overrides, args.config)
        suffix = "" if config.model == "dnc" else f"-{config.model}"
        run_dir = Path(args.out or f"runs/{config.task}-{config.preset}{suffix}")
    result = train(config, run_dir, resume=bool(args.resume), force=args.force)
    if "interrupted" in result and result["interrupted"]:
        return 130
    return 0


def _model_dir(args: argparse.Namespace) -> Path:
    """The run directory, or the shipped model's folder with --pretrained."""
    if args.pretrained and args.run_dir:
        raise ValueError(f"{args.command}: give a run directory or --pretrained, not both")
    if args.pretrained:
        return zoo.path(args.pretrained)
    if not args.run_dir:
        raise ValueError(f"{args.command}: name a run directory or --pretrained "
                         f"({', '.join(zoo.available())})")
    return Path(args.run_dir)


def _eval(args: argparse.Namespace, extra: list[str]) -> int:
    report = evaluate_run(_model_dir(args), batches=args.batches, batch_size=args.batch_size,
                          memory_size=args.memory_size, seed=args.seed, device=args.device,
                          which="last" if args.last else "best")
    print(to_markdown(report), end="")
    out = args.out or (f"eval-{args.pretrained}" if args.pretrained else args.run_dir)
    Path(out).mkdir(parents=True, exist_ok=True)
    written = write_report(out, report)
    print("written: " + ", ".join(str(path) for path in written))
    return 0


def _plot(args: argparse.Namespace, extra: list[str]) -> int:
    out = args.out or (f"plots-{args.pretrained}" if args.pretrained else None)
    for path in plot_run(_model_dir(args), seed=args.seed, out=out):
        print(f"written: {path}")
    return 0


def _data(args: argparse.Namespace, extra: list[str]) -> int:
    if args.dataset == "london":
        found = london.find_london_dir()
        print(f"London Underground data: {found}" if found else london.HOW_TO_GET)
        return 0 if found else 1
    folder = download.fetch_babi(args.source, args.dir, force=args.force)
    print(f"bAbI v1.2 (en, en-10k): {folder}")
    return 0


def _export(args: argparse.Namespace, extra: list[str]) -> int:
    out = export_pretrained(args.run_dir, args.out, which="last" if args.last else "best")
    print(f"written: {out / 'config.json'}, {out / 'model.safetensors'}")
    return 0


def _bench(args: argparse.Namespace, extra: list[str]) -> int:
    return bench_main(extra)


def _study(args: argparse.Namespace, extra: list[str]) -> int:
    return study.main(extra)


def _tasks(args: argparse.Namespace, extra: list[str]) -> int:
    for name, cls in TASKS.items():
        task = cls()
        print(f"{name}: {cls.summary}")
        try:
            sizes = f"input {task.input_size}, output {task.output_size}"
        except FileNotFoundError as missing:  # data-set tasks need their files
            sizes = f"data not found ({missing})"
        print(f"  {sizes}, metric {cls.primary_metric}")
        print("  options: " + ", ".join(f"{k}={v}" for k, v in task.options().items()))
        print(f"  curriculum: {task.describe_curriculum()}")
        print(f"  presets: {', '.join(presets_for(name))}")
    return 0


def _info(args: argparse.Namespace, extra: list[str]) -> int:
    config = DNCConfig()
    model = DNC(config)
    print(f"torchdnc {torchdnc.__version__} (torch {torch.__version__})")
    print("default DNCConfig:")
    print(config.to_json())
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    return 0


def _demo(args: argparse.Namespace, extra: list[str]) -> int:
    """Run an untrained DNC over a toy sequence and print what its memory did."""
    torch.manual_seed(args.seed)
    model = DNC(input_size=4, output_size=4, memory_size=8, word_size=8, num_reads=2)
    x = torch.randn(1, args.steps, 4)
    with torch.no_grad():
        _, _, trace = model(x, return_trace=True)
    print(f"untrained DNC, N=8 slots, {args.steps} steps; per step: the slot written most,")
    print("the write gate, the most used slot's usage and read head 0's strongest slot")
    print(f"{'t':>3} {'write->slot':>11} {'gate':>6} {'max usage':>9} {'read0<-slot':>11}")
    for t in range(args.steps):
        ww = trace.write_weights[0, t, 0]
        print(f"{t:3d} {int(ww.argmax()):11d} {float(trace.write_gates[0, t, 0]):6.3f} "
              f"{float(trace.usage[0, t].max()):9.3f} {int(trace.read_weights[0, t, 0].argmax()):11d}")
    return 0


def _build(args: argparse.Namespace, extra: list[str]) -> int:
    extension = fused.load_extension(verbose=args.verbose)
    if extension is None:
        print(f"torchdnc build: error: the fused CPU kernel could not be built ({fused.failure()}); "
              "the DNC runs the plain PyTorch path", file=sys.stderr)
        return 1
    print(f"fused CPU kernel ready: {fused.extension_name()} ({fused.BUILD_SECONDS:.1f} s), "
          f"in {Path(extension.__file__).parent}")
    return 0


class _ConsoleHandler(logging.Handler):
    """Log records on stderr, through tqdm when a progress bar is showing."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            try:
                from tqdm import tqdm

                tqdm.write(text, file=sys.stderr)
            except ImportError:
                print(text, file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """What the command line shows: torchdnc's log records and Python warnings."""
    handler = _ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("torchdnc", "py.warnings"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
            logger.addHandler(handler)
        logger.setLevel(level)
    logging.captureWarnings(True)


class _Parser(argparse.ArgumentParser):
    """argparse, with every usage error on one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(minimum: int):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return convert


def _device(text: str) -> str:
    prefix, _, index = text.partition(":")
    if text in ("cpu", "cuda", "auto") or (prefix == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="torchdnc", description="Differentiable Neural Computer: train, evaluate, plot.")
    parser.add_argument("--version", action="version", version=f"torchdnc {torchdnc.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a model on a task", epilog=_train_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="torchdnc train TASK [--preset NAME] [--config FILE] [--out DIR] [--force] "
              "[--key=value ...]\n       torchdnc train --resume RUN_DIR [--key=value ...]")
    train.add_argument("task", nargs="?", help="task name (see `torchdnc tasks`)")
    train.add_argument("--preset", help="named preset of the task (default: default)")
    train.add_argument("--config", help="YAML or JSON file of options")
    train.add_argument("--out", help="run directory (default runs/TASK-PRESET)")
    train.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    train.set_defaults(run=_train, extra_allowed=True)

    evaluate = commands.add_parser("eval", help="evaluate a run on fresh data, also beyond training")
    evaluate.add_argument("run_dir", nargs="?", help="run directory")
    evaluate.add_argument("--pretrained", metavar="NAME",
                          help=f"a model that comes with torchdnc ({', '.join(zoo.available())})")
    evaluate.add_argument("--out", help="folder for eval.md / eval.json (default: the run "
                                        "directory; eval-NAME with --pretrained)")
    evaluate.add_argument("--batches", type=_at_least(1), default=10,
                          help="batches per row (default 10)")
    evaluate.add_argument("--batch-size", type=_at_least(1), default=32, help="batch size (default 32)")
    evaluate.add_argument("--memory-size", type=_at_least(1), default=None,
                          help="the larger memory N to test with (default 4x training N)")
    evaluate.add_argument("--seed", type=_at_least(0), default=0, help="data seed (default 0)")
    evaluate.add_argument("--device", type=_device, default="cpu",
                          help="cpu, cuda, cuda:N or auto (default cpu)")
    evaluate.add_argument("--last", action="store_true",
                          help="evaluate the last checkpoint, not best.safetensors (the best validation "
                               "result, kept by runs with keep_best)")
    evaluate.set_defaults(run=_eval)

    plot = commands.add_parser("plot", help="write a run's figures as PNG")
    plot.add_argument("run_dir", nargs="?", help="run directory")
    plot.add_argument("--pretrained", metavar="NAME",
                      help=f"a model that comes with torchdnc ({', '.join(zoo.available())})")
    plot.add_argument("--seed", type=_at_least(0), default=0,
                      help="seed of the example drawn (default 0)")
    plot.add_argument("--out", default=None, help="folder for the PNGs (default RUN_DIR/plots; "
                                                  "plots-NAME with --pretrained)")
    plot.set_defaults(run=_plot)

    data = commands.add_parser("data", help="fetch a data set into the user cache (bAbI), or "
                                            "say where to get it (London)")
    data.add_argument("dataset", choices=["babi", "london"])
    data.add_argument("--source", help="bAbI: a local tasks_1-20_v1-2.tar.gz, or a URL (default: "
                                       "the public addresses, in order)")
    data.add_argument("--dir", help="bAbI: where to unpack (default: the cache, $TORCHDNC_DATA)")
    data.add_argument("--force", action="store_true", help="fetch again even if already there")
    data.set_defaults(run=_data)

    export = commands.add_parser("export", help="write a run's model as a folder of config.json "
                                                "and model.safetensors (no pickle)")
    export.add_argument("run_dir", help="run directory")
    export.add_argument("out", help="folder to write")
    export.add_argument("--last", action="store_true", help="the last checkpoint, not the best")
    export.set_defaults(run=_export)

    bench = commands.add_parser("bench", help="speed and memory beside baselines (see --help)",
                                add_help=False)
    bench.set_defaults(run=_bench, extra_allowed=True)
    study_parser = commands.add_parser("study", help="does it scale, what if memory runs out "
                                                     "(see --help; docs/scaling.md)", add_help=False)
    study_parser.set_defaults(run=_study, extra_allowed=True)

    build = commands.add_parser("build", help="compile the fused CPU kernel now (it is cached; "
                                              "otherwise the first DNC call does it)")
    build.add_argument("--verbose", action="store_true", help="show the compiler's output")
    build.set_defaults(run=_build)

    tasks = commands.add_parser("tasks", help="list the tasks, their options and presets")
    tasks.set_defaults(run=_tasks)
    info = commands.add_parser("info", help="print the version and the default configuration")
    info.set_defaults(run=_info)
    demo = commands.add_parser("demo", help="run an untrained DNC and print what its memory did")
    demo.add_argument("--steps", type=_at_least(1), default=10, help="sequence length (default 10)")
    demo.add_argument("--seed", type=_at_least(0), default=0, help="random seed (default 0)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; every error ends in one line on stderr (exit 2; 130 when
    interrupted). ``TORCHDNC_DEBUG=1`` shows the traceback of unexpected ones."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and not getattr(args, "extra_allowed", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging()
    command = f"torchdnc {args.command}"
    try:
        return args.run(args, extra)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("TORCHDNC_DEBUG"):
            raise
        print(f"{command}: error: {describe_error(error)}", file=sys.stderr)
        return 2


def describe_error(error: BaseException) -> str:
    """One line that names the problem."""
    if isinstance(error, UnicodeDecodeError):
        text = f"a file is not UTF-8 text ({error.reason} at byte {error.start})"
    elif isinstance(error, OSError) and error.filename:
        text = f"{error.strerror or type(error).__name__}: {error.filename}"
    elif isinstance(error, (ValueError, RunError, CheckpointError, OSError, KeyError)):
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    else:
        text = f"{type(error).__name__}: {error} (unexpected; TORCHDNC_DEBUG=1 shows the traceback)"
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


if __name__ == "__main__":
    sys.exit(main())
