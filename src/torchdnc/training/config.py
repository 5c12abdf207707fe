"""Training configuration: one dataclass, named presets, command-line overrides.

    config = resolve_config("copy", preset="quick", overrides=["--lr=1e-3"])

An override names a field of `TrainConfig` (``--lr=1e-3``), of the model's
`DNCConfig` (``--memory_size=32``, or ``--dnc.memory_size=32``) or an option
of the task (``--max_length=10``, or ``--task.max_length=10``); the value is
converted to that field's type, and anything unknown is an error that lists
the valid names.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchdnc import fields
from torchdnc.dnc import DNCConfig
from torchdnc.fields import dataclass_from_dict
from torchdnc.sparse import SparseDNCConfig
from torchdnc.tasks import TASKS, make_task

# DNCConfig fields the task decides, not the user.
TASK_DECIDES = ("input_size", "output_size", "batch_first")
MODELS = ("dnc", "lstm", "sparse")

# Named variants: the DNC options they set (docs/semantics.md, "The DNC's successors").
# Csordás & Schmidhuber 2019: M masking, D de-allocation, S sharpness control.
# Franke et al. 2018: rsDNC (layer norm, 10% bypass dropout, no temporal links), bi-rsDNC.
VARIANTS: dict[str, dict[str, Any]] = {
    "dnc": {},
    "dnc-m": {"masking": True},
    "dnc-md": {"masking": True, "deallocation": True},
    "dnc-mds": {"masking": True, "deallocation": True, "sharpness": True},
    "rsdnc": {"layer_norm": True, "bypass_dropout": 0.1, "temporal_links": False},
    "bi-rsdnc": {"layer_norm": True, "bypass_dropout": 0.1, "temporal_links": False,
                 "bidirectional": True},
}
OPTIMIZERS = ("rmsprop", "adam")


def model_defaults() -> dict[str, Any]:
    """The DNC options a run may set (``--dnc.NAME``) with their defaults."""
    values = DNCConfig().to_dict()
    for name in TASK_DECIDES:
        values.pop(name)
    return values


def _sparse_defaults() -> dict[str, Any]:
    """The sparse model's own options (those the dense DNCConfig does not have)."""
    dense = set(DNCConfig().to_dict())
    return {k: v for k, v in SparseDNCConfig().to_dict().items() if k not in dense}


@dataclass
class TrainConfig:
    """Everything one training run needs; saved as ``config.json`` in the run."""

    task: str = "copy"
    task_options: dict[str, Any] = field(default_factory=dict)
    preset: str = "default"
    # The DNC's successors as named sets of DNC options (VARIANTS); "dnc" is the paper's.
    variant: str = "dnc"
    model: str = "dnc"  # "dnc", "sparse" (SAM / SDNC), or "lstm" for the LSTM baseline
    dnc: dict[str, Any] = field(default_factory=model_defaults)
    sparse: dict[str, Any] = field(default_factory=dict)  # model="sparse": SparseDNCConfig options
    lstm_hidden_size: int = 0  # LSTM baseline width; 0 matches the DNC's parameter count
    optimizer: str = "rmsprop"  # paper: RMSProp, lr 1e-4, momentum 0.9
    lr: float = 1e-4
    momentum: float = 0.9  # RMSProp momentum (Adam: beta1)
    rmsprop_alpha: float = 0.9  # RMSProp decay of the squared-gradient average (TF default)
    optimizer_eps: float = 1e-10
    grad_clip: float = 50.0  # global gradient norm; 0 disables
    batch_size: int = 16  # global batch, split across DDP ranks
    iterations: int = 20000
    curriculum: bool = True
    curriculum_threshold: float = 0.5  # raise the level when the eval metric is at most this
    solved_threshold: float = 0.0  # stop when the eval metric at the last level is at most this
    solved_patience: int = 1  # ... in this many evaluations in a row
    keep_best: bool = False  # also save best.safetensors whenever the eval metric at the last level improves
    early_stop_patience: int = 0  # stop after this many evaluations without improvement; 0: never
    eval_interval: int = 250
    eval_batches: int = 4
    checkpoint_interval: int = 1000
    log_interval: int = 10
    seed: int = 0
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: unknown task {self.task!r}; valid tasks: {sorted(TASKS)}")
        fields.choice("model", self.model, MODELS)
        fields.choice("variant", self.variant, tuple(VARIANTS))
        if self.variant != "dnc" and self.model == "sparse":
            raise ValueError(f"variant: {self.variant!r} sets options of the dense DNC; "
                             "the sparse model takes --sparse.* options")
        fields.choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("batch_size", "iterations", "eval_interval", "eval_batches",
                     "checkpoint_interval", "log_interval", "solved_patience"):
            fields.integer(name, getattr(self, name), 1)
        fields.integer("early_stop_patience", self.early_stop_patience, 0)
        fields.integer("lstm_hidden_size", self.lstm_hidden_size, 0,
                       note="0 matches the DNC's parameter count")
        fields.integer("threads", self.threads, 0, note="0 leaves torch's default")
        fields.integer("seed", self.seed, 0, 2**63 - 1)
        fields.number("lr", self.lr, above=0)
        fields.number("momentum", self.momentum, 0, below=1)
        fields.number("rmsprop_alpha", self.rmsprop_alpha, 0, below=1)
        fields.number("optimizer_eps", self.optimizer_eps, above=0)
        fields.number("grad_clip", self.grad_clip, 0, note="a global gradient norm; 0 disables")
        fields.number("curriculum_threshold", self.curriculum_threshold, 0)
        fields.number("solved_threshold", self.solved_threshold, 0, note="0: never stop early")
        for name in ("curriculum", "keep_best", "progress"):
            fields.boolean(name, getattr(self, name))
        if not isinstance(self.device, str) or (
                self.device not in ("cpu", "cuda", "auto") and not _is_cuda_index(self.device)):
            raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}")
        unknown = sorted(set(self.dnc) - set(model_defaults()))
        if unknown:
            raise ValueError(f"dnc: unknown field(s) {unknown}; valid fields: {sorted(model_defaults())}")
        self.dnc = {**model_defaults(), **self.dnc}
        unknown = sorted(set(self.sparse) - set(_sparse_defaults()))
        if unknown:
            raise ValueError(f"sparse: unknown field(s) {unknown}; valid fields: "
                             f"{sorted(_sparse_defaults())}")
        # The model's own checks, now rather than after the data has loaded.
        sizes = {name: 1 for name in TASK_DECIDES if name != "batch_first"}
        if self.model == "sparse":
                    SparseDNCConfig.from_dense(DNCConfig(**sizes, **self.dnc), **self.sparse)
        else:
            DNCConfig(**sizes, **self.dnc)
        make_task(self.task, self.task_options)  # validates the options

    def make_task(self):
        return make_task(self.task, self.task_options)

    def dnc_config(self, task) -> DNCConfig:
        return DNCConfig(input_size=task.input_size, output_size=task.output_size, **self.dnc)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return dataclass_from_dict(cls, values, "config")

    def fields_defining_the_model(self) -> dict[str, Any]:
        """What a resumed run must not change (names as `describe_difference` prints)."""
        values = {"task": self.task, "model": self.model, "lstm_hidden_size": self.lstm_hidden_size,
                  "variant": self.variant}
        values.update({f"dnc.{k}": v for k, v in self.dnc.items()})
        values.update({f"sparse.{k}": v for k, v in self.sparse.items()})
        values.update({f"task.{k}": v for k, v in self.make_task().options().items()})
        return values


# Named presets: overrides on top of the TrainConfig defaults, per task.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "copy": {
        "default": {},
        "quick": {  # the README's main command: NTM copy, lengths 1-20, in minutes on 2 cores
            "dnc.hidden_size": 64, "dnc.memory_size": 24, "dnc.word_size": 8, "dnc.num_reads": 1,
            "optimizer": "adam", "lr": 3e-3, "batch_size": 16, "iterations": 4000,
            "eval_interval": 100, "eval_batches": 4, "curriculum_threshold": 1.0,
            "solved_threshold": 0.05, "checkpoint_interval": 500,
        },
        "full": {  # solved: under 0.02 wrong bits per sequence on 256 fresh sequences
            "dnc.hidden_size": 64, "dnc.memory_size": 32, "dnc.word_size": 16, "dnc.num_reads": 1,
            "optimizer": "adam", "lr": 1e-3, "batch_size": 16, "iterations": 20000,
            "curriculum_threshold": 1.0, "solved_threshold": 0.02, "eval_batches": 16,
            "solved_patience": 3,
        },
    },
    "repeat_copy": {
        "default": {},
        "full": {
            "dnc.hidden_size": 64, "dnc.memory_size": 32, "dnc.word_size": 16, "dnc.num_reads": 1,
            "optimizer": "adam", "lr": 1e-3, "iterations": 60000, "eval_batches": 8,
            "curriculum_threshold": 1.0, "solved_threshold": 0.1, "solved_patience": 3,
        },
    },
    "associative_recall": {
        "default": {},
        "full": {
            "dnc.hidden_size": 128, "dnc.memory_size": 48, "dnc.word_size": 16, "dnc.num_reads": 2,
            "optimizer": "adam", "lr": 1e-3, "iterations": 60000, "eval_batches": 8,
            "curriculum_threshold": 1.0, "solved_threshold": 0.1, "solved_patience": 3,
        },
    },
    "babi": {
        "default": {"curriculum": False},
        # DNC1 of the paper (Extended Data Table 2): LSTM 256, N = 256, W = 64, R = 4,
        # RMSProp lr 1e-4 momentum 0.9. The paper ran batch size 1 on 16 asynchronous
        # workers; batch 16 and the iteration budget are ours.
        "paper": {
            "dnc.hidden_size": 256, "dnc.memory_size": 256, "dnc.word_size": 64,
            "dnc.num_reads": 4, "dnc.num_writes": 1, "optimizer": "rmsprop", "lr": 1e-4,
            "momentum": 0.9, "batch_size": 16, "iterations": 100000, "curriculum": False,
            "eval_interval": 1000, "eval_batches": 25, "checkpoint_interval": 1000,
            "keep_best": True, "early_stop_patience": 20,
        },
        # bAbI task 1 on 2 CPU cores. Without renaming (task.augment) this small
        # DNC memorises the 1,800 training stories and stalls near 50% error; with
        # it, validation error sits near 45% for some 20,000 iterations before it
        # falls, so no early stop here (a patience would end the run on the plateau).
        "quick": {
            "task.tasks": "1", "task.augment": True, "dnc.hidden_size": 64,
            "dnc.memory_size": 32, "dnc.word_size": 16, "dnc.num_reads": 2, "optimizer": "adam",
            "lr": 1e-3, "batch_size": 16, "iterations": 50000, "curriculum": False,
            "eval_interval": 250, "eval_batches": 8, "checkpoint_interval": 500,
            "solved_threshold": 0.02, "solved_patience": 2, "keep_best": True,
        },
        # All 20 tasks jointly, the paper's encoding (no renaming), on a CPU budget:
        # about 80 minutes on one core. Batches mix the tasks (task.batching).
        "joint": {
            "task.tasks": "all", "dnc.hidden_size": 128, "dnc.memory_size": 48,
            "dnc.word_size": 32, "dnc.num_reads": 2, "optimizer": "adam", "lr": 1e-3,
            "batch_size": 16, "iterations": 40000, "curriculum": False, "eval_interval": 1000,
            "eval_batches": 16, "checkpoint_interval": 1000, "keep_best": True,
        },
    },
    # Graph tasks (Methods and Extended Data Tables 2-5). Lessons pass at 90% of
    # sequences right (80% for shortest path): curriculum_threshold is the error.
    "traversal": {
        "default": {"curriculum_threshold": 0.1, "eval_interval": 100},
        "paper": {
            "dnc.hidden_size": 256, "dnc.num_layers": 3, "dnc.memory_size": 256,
            "dnc.word_size": 50, "dnc.num_reads": 5, "optimizer": "rmsprop", "lr": 1e-5,
            "batch_size": 2, "curriculum_threshold": 0.1, "iterations": 1000000,
            "eval_interval": 1000, "eval_batches": 50,
        },
        # The first lessons on 2 cores. The quick presets keep a one-layer controller:
        # the fused kernel runs it about 4x faster than the plain path runs the
        # paper's deep one (12.5 against 3.2 iterations/s on shortest path lesson 1).
        "quick": {
            "task.lessons": 4, "dnc.hidden_size": 128, "dnc.memory_size": 48,
            "dnc.word_size": 32, "dnc.num_reads": 2, "optimizer": "adam", "lr": 1e-3,
            "batch_size": 16, "iterations": 60000, "eval_interval": 250, "eval_batches": 8,
            "curriculum_threshold": 0.1,
        },
    },
    "shortest_path": {
        "default": {"curriculum_threshold": 0.2},
        "paper": {
            "dnc.hidden_size": 256, "dnc.num_layers": 2, "dnc.memory_size": 128,
            "dnc.word_size": 50, "dnc.num_reads": 5, "optimizer": "rmsprop", "lr": 3e-6,
            "batch_size": 1, "curriculum_threshold": 0.2, "iterations": 1000000,
            "eval_interval": 2000, "eval_batches": 50,
        },
        "quick": {
            "task.lessons": 4, "dnc.hidden_size": 128, "dnc.memory_size": 48,
            "dnc.word_size": 32, "dnc.num_reads": 2, "optimizer": "adam", "lr": 1e-3,
            "batch_size": 16, "iterations": 40000, "eval_interval": 250, "eval_batches": 8,
            "curriculum_threshold": 0.2,
        },
    },
    "inference": {
        "default": {"curriculum_threshold": 0.1, "eval_interval": 100},
        "paper": {
            "dnc.hidden_size": 256, "dnc.num_layers": 3, "dnc.memory_size": 128,
            "dnc.word_size": 50, "dnc.num_reads": 5, "optimizer": "rmsprop", "lr": 1e-5,
            "batch_size": 32, "curriculum_threshold": 0.1, "iterations": 1000000,
            "eval_interval": 1000, "eval_batches": 10,
        },
        "quick": {
            "task.lessons": 4, "dnc.hidden_size": 128, "dnc.memory_size": 48,
            "dnc.word_size": 32, "dnc.num_reads": 2, "optimizer": "adam", "lr": 1e-3,
            "batch_size": 16, "iterations": 40000, "eval_interval": 250, "eval_batches": 8,
            "curriculum_threshold": 0.1,
        },
    },
    # Mini-SHRDLU (Methods, Extended Data Tables 2 and 6): 2 x 250 LSTM, N 32 x W 100,
    # R 2, batch 32 episodes, RMSProp 3e-5; lessons pass at 85% of constraints
    # satisfied over 160 episodes, checked every 400 batches.
    "shrdlu": {
        "default": {"curriculum_threshold": 0.15, "eval_batches": 5, "batch_size": 32},
        "paper": {
            "task.curriculum": "paper", "dnc.hidden_size": 250, "dnc.num_layers": 2,
            "dnc.memory_size": 32, "dnc.word_size": 100, "dnc.num_reads": 2,
            "optimizer": "rmsprop", "lr": 3e-5, "batch_size": 32, "iterations": 1000000,
            "curriculum_threshold": 0.15, "eval_interval": 400, "eval_batches": 5,
            "checkpoint_interval": 1000,
        },
        "quick": {
            "task.curriculum": "quick", "task.entropy_cost": 0.02, "dnc.hidden_size": 64,
            "dnc.memory_size": 16,
            "dnc.word_size": 16, "dnc.num_reads": 2, "optimizer": "adam", "lr": 3e-3,
            "batch_size": 32, "iterations": 40000, "curriculum_threshold": 0.15,
            "eval_interval": 100, "eval_batches": 5, "checkpoint_interval": 500,
        },
    },
    "priority_sort": {
        "default": {},
        # Adam at 3e-3: at 1e-3 the first level (5 -> 4) still gets 5.3 of its 32 bits
        # wrong after 8,000 iterations, at 3e-3 fewer than 1 by 3,000 (README).
        "full": {
            "dnc.hidden_size": 128, "dnc.memory_size": 32, "dnc.word_size": 16, "dnc.num_reads": 2,
            "optimizer": "adam", "lr": 3e-3, "iterations": 20000, "curriculum_threshold": 3.0,
        },
    },
}


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def presets_for(task: str) -> dict[str, dict[str, Any]]:
    return PRESETS.get(task, {"default": {}})


def _convert(name: str, text: Any, example: Any) -> Any:
    """``text`` as the type of ``example`` (a field's default), or a clear error."""
    if not isinstance(text, str):
        if isinstance(example, bool) != isinstance(text, bool) or (
            isinstance(example, (int, float)) and not isinstance(text, (int, float))
        ) or (isinstance(example, str) and not isinstance(text, str)):
            raise ValueError(f"option {name}: expected {type(example).__name__}, got {text!r}")
        return float(text) if isinstance(example, float) else text
    if isinstance(example, bool):
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"option {name}: expected true or false, got {text!r}")
    if isinstance(example, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"option {name}: expected an integer, got {text!r}") from None
    if isinstance(example, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"option {name}: expected a number, got {text!r}") from None
    return text


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply ``{name: value}`` overrides to a `TrainConfig` dict, converting types."""
    values = json.loads(json.dumps(values))
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"dnc", "task_options",
                                                                          "sparse"}
    sparse_defaults = _sparse_defaults()
    defaults = TrainConfig(task=values.get("task", "copy")).to_dict()
    task_defaults = make_task(values.get("task", "copy")).options()
    for raw_name, raw_value in overrides.items():
        name = raw_name.lstrip("-").replace("-", "_")
        if name.startswith("dnc."):
            section, key = "dnc", name[4:]
        elif name.startswith("sparse."):
            section, key = "sparse", name[7:]
        elif name.startswith("task."):
            section, key = "task_options", name[5:]
        elif name in train_fields:
            section, key = None, name
        elif name in defaults["dnc"]:
            section, key = "dnc", name
        elif name in task_defaults:
            section, key = "task_options", name
        else:
            section, key = "?", name
        if section is None:
            values[key] = _convert(raw_name, raw_value, defaults[key])
        elif section == "dnc" and key in defaults["dnc"]:
            values["dnc"][key] = _convert(raw_name, raw_value, defaults["dnc"][key])
        elif section == "task_options" and key in task_defaults:
            values["task_options"][key] = _convert(raw_name, raw_value, task_defaults[key])
        elif section == "sparse" and key in sparse_defaults:
            values["sparse"][key] = _convert(raw_name, raw_value, sparse_defaults[key])
        else:
            choices = (sorted(train_fields) + [f"dnc.{k}" for k in defaults["dnc"]]
                       + [f"task.{k}" for k in task_defaults]
                       + [f"sparse.{k}" for k in sparse_defaults])
            hint = (" (input_size, output_size and batch_first follow from the task)"
                    if key in TASK_DECIDES else "")
            raise ValueError(f"unknown option {raw_name!r}{hint}; valid options: {', '.join(choices)}")
    return values


def parse_override_args(args: list[str]) -> dict[str, str]:
    """``["--lr=1e-3", "--max_length", "10"]`` -> ``{"lr": "1e-3", "max_length": "10"}``."""
    overrides: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ValueError(f"unexpected argument {arg!r}: options look like --key=value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, value = arg[2:], args[i + 1]
            i += 1
        else:
            raise ValueError(f"option {arg!r} needs a value: --key=value")
        overrides[key] = value
        i += 1
    return overrides


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON file of overrides (flat names, or ``dnc:`` / ``task_options:`` maps)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"config file {path}: not UTF-8 text ({error.reason} at byte "
                         f"{error.start})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {path}: not valid JSON ({error.msg} at line "
                             f"{error.lineno}, column {error.colno})") from None
    else:
        try:
            import yaml
        except ImportError:
            raise ValueError(f"config file {path}: YAML needs pyyaml (pip install "
                             "'torchdnc[train]'), or write the file as JSON") from None

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or type(error).__name__
            raise ValueError(f"config file {path}: not valid YAML ({problem}{where})") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping of option names to values")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("dnc", "task_options", "sparse") and isinstance(value, dict):
            prefix = {"dnc": "dnc.", "task_options": "task.", "sparse": "sparse."}[key]
            flat.update({prefix + k: v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def resolve_config(task: str, preset: str | None = None, overrides: dict[str, Any] | None = None,
                   config_file: str | Path | None = None) -> TrainConfig:
    """Defaults, then the preset, then a config file, then command-line overrides."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(sorted(TASKS))}")
    presets = presets_for(task)
    preset = preset or "default"
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for task {task!r}; "
                         f"valid presets: {', '.join(sorted(presets))}")
    values = TrainConfig(task=task).to_dict()
    values["preset"] = preset
    values = apply_overrides(values, presets[preset])
    from_file = load_config_file(config_file) if config_file is not None else {}
    # The variant's DNC options go on top of the preset; the file and the command
    # line can still change each of them.
    variant = next((str(layer[key]) for layer in (overrides or {}, from_file)
                    for key in ("variant", "--variant") if key in layer), values["variant"])
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {tuple(VARIANTS)}, got {variant!r}")
    values = apply_overrides(values, {"variant": variant,
                                      **{f"dnc.{k}": v for k, v in VARIANTS[variant].items()}})
    values = apply_overrides(values, from_file)
    values = apply_overrides(values, overrides or {})
    return TrainConfig.from_dict(values)


def describe_difference(stored: TrainConfig, requested: TrainConfig) -> list[str]:
    """Model-defining fields that differ between two configs, as sentences."""
    old, new = stored.fields_defining_the_model(), requested.fields_defining_the_model()
    return [f"{name} is {old.get(name)!r} in the run, {new.get(name)!r} requested"
            for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
