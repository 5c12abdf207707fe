"""For users beyond this machine: data that fetches itself, models saved and
loaded without pickle, shipped pretrained models, figures from Python."""

from __future__ import annotations

import io
import json
import os
import runpy
import tarfile
from pathlib import Path

import pytest
import torch

import torchdnc
from torchdnc import DNC, tensorfile, zoo
from torchdnc.cli import main
from torchdnc.data import babi as babi_data
from torchdnc.data import download
from torchdnc.data.babi import TASK_NAMES
from torchdnc.sparse import SparseDNC

STORY = "1 Mary went to the kitchen.\n2 John went to the garden.\n3 Where is Mary?\tkitchen\t1\n"
QUESTIONS = {"en": (1000, 1000), "en-10k": (10000, 1000)}


def make_archive(path: Path, skip: str | None = None, extra: dict[str, bytes] | None = None) -> Path:
    """A bAbI v1.2-shaped archive: every task file with its known number of questions."""
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for folder, (train, test) in QUESTIONS.items():
            for task, title in enumerate(TASK_NAMES, start=1):
                for split, count in (("train", train), ("test", test)):
                    name = f"tasks_1-20_v1-2/{folder}/qa{task}_{title}_{split}.txt"
                    if name != skip:
                        add(name, (STORY * count).encode())
        add("tasks_1-20_v1-2/LICENSE.txt", b"CC BY 3.0\n")
        for name, data in (extra or {}).items():
            add(name, data)
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return make_archive(tmp_path_factory.mktemp("archive") / download.BABI_ARCHIVE)


def test_fetch_from_a_file_url_checks_unpacks_and_never_downloads_again(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHDNC_DATA", str(tmp_path / "cache"))
    folder = download.fetch_babi(archive.as_uri())
    assert folder == tmp_path / "cache" / "babi"
    assert (folder / "en-10k" / "qa3_three-supporting-facts_train.txt").is_file()
    assert (folder / "LICENSE.txt").is_file()
    assert babi_data.data_dir_candidates()[0] == folder  # the cache is searched first

    def no_network(*args, **kwargs):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(download, "_download", no_network)
    assert download.fetch_babi() == folder
    assert download.locate_babi() == folder


def test_data_command_with_a_local_archive(archive, tmp_path, capsys):
    assert main(["data", "babi", "--source", str(archive), "--dir", str(tmp_path / "babi")]) == 0
    assert f"bAbI v1.2 (en, en-10k): {tmp_path / 'babi'}" in capsys.readouterr().out


def test_without_network_the_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "BABI_URLS", ("http://127.0.0.1:9/tasks_1-20_v1-2.tar.gz",))
    with pytest.raises(download.DownloadError, match=r"could not download the bAbI archive .*By "
                                                     r"hand: fetch tasks_1-20_v1-2.tar.gz from .*"
                                                     r"torchdnc data babi --source"):
        download.fetch_babi(folder=tmp_path / "babi")
    assert not (tmp_path / "babi").exists()


@pytest.mark.parametrize("damage,message", [
    ("skip", "incomplete or not v1.2: en-10k/qa3_three-supporting-facts_train.txt missing"),
    ("unsafe", "unsafe member name"),
    ("garbage", "not a readable tar.gz archive"),
])
def test_bad_archives_are_refused(tmp_path, damage, message):
    path = tmp_path / download.BABI_ARCHIVE
    if damage == "skip":
        make_archive(path, skip="tasks_1-20_v1-2/en-10k/qa3_three-supporting-facts_train.txt")
    elif damage == "unsafe":
        make_archive(path, extra={"tasks_1-20_v1-2/../../evil.txt": b"x"})
    else:
        path.write_bytes(b"not an archive")
    with pytest.raises(download.DownloadError, match=message):
        download.fetch_babi(path, folder=tmp_path / "babi")
    assert not (tmp_path / "babi").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_train_babi_on_downloaded_data_with_no_shared_folder(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHDNC_DATA", str(tmp_path / "cache"))
    assert main(["data", "babi", "--source", str(archive)]) == 0
    monkeypatch.setattr(babi_data, "data_dir_candidates", lambda: [download.babi_cache()])
    monkeypatch.chdir(tmp_path)
    assert main(["train", "babi", "--preset", "quick", "--iterations=5", "--eval_interval=5",
                 "--eval_batches=1", "--progress=false", "--out", "run"]) == 0


# -- saving and loading without pickle -------------------------------------------------


@pytest.mark.parametrize("cls,kwargs", [(DNC, dict(num_writes=2, num_layers=2)),
                                        (DNC, dict(masking=True, temporal_links=False)),
                                        (SparseDNC, dict(link_entries=3))])
def test_save_pretrained_round_trip(cls, kwargs, tmp_path):
    model = cls(input_size=3, output_size=2, hidden_size=8, **kwargs).eval()
    model.save_pretrained(tmp_path)
    description = json.loads((tmp_path / "config.json").read_text())
    assert description["model"] == cls.__name__ and description["config"] == model.config.to_dict()
    loaded = cls.from_pretrained(tmp_path)
    assert loaded.config == model.config and not loaded.training
    x = torch.randn(2, 5, 3)
    assert torch.equal(loaded(x)[0], model(x)[0])
    assert type(torchdnc.load_pretrained(tmp_path)) is cls


def test_saved_files_are_safetensors_that_the_library_reads(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    model = DNC(input_size=3, output_size=2, hidden_size=8)
    model.save_pretrained(tmp_path)
    theirs = safetensors.load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(theirs[k], v) for k, v in model.state_dict().items())
    safetensors.save_file({"a": torch.arange(6, dtype=torch.float64).view(2, 3),
                           "b": torch.tensor([True, False])}, str(tmp_path / "theirs.safetensors"),
                          metadata={"note": "x"})
    mine, metadata = tensorfile.load(tmp_path / "theirs.safetensors")
    assert torch.equal(mine["a"], torch.arange(6, dtype=torch.float64).view(2, 3))
    assert mine["b"].tolist() == [True, False] and metadata == {"note": "x"}


def test_a_hostile_weights_file_runs_nothing(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model": "DNC", "config": DNC(input_size=3, output_size=2).config.to_dict()}))
    header = json.dumps({"weight": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}})
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header.encode())
    with pytest.raises(tensorfile.TensorFileError, match="points outside the file"):
        DNC.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"pickle" * 10)  # a pickle
    with pytest.raises(tensorfile.TensorFileError, match="not a safetensors file"):
        DNC.from_pretrained(tmp_path)


def test_checkpoints_hold_no_pickle(tmp_path):
    from test_train import tiny_config
    from torchdnc.training import checkpoint, train

    train(tiny_config(iterations=2), tmp_path)
    data = (tmp_path / checkpoint.CHECKPOINT).read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert "__metadata__" in header and b"\x80\x04\x95" not in data[:16]


# -- shipped models -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["copy", "repeat_copy", "associative_recall"])
def test_each_pretrained_model_loads_small_and_still_solves_its_task(name):
    from torchdnc.evaluation import evaluate_run

    assert name in zoo.available()
    folder = zoo.path(name)
    assert sum(f.stat().st_size for f in folder.iterdir()) < 1_000_000
    model = torchdnc.pretrained(name)
    assert isinstance(model, DNC)
    report = evaluate_run(folder, batches=4, batch_size=32)
    training_row = report["rows"][0]
    assert training_row["setting"].startswith("training") and training_row["bit_error"] < 0.01


def test_plot_a_pretrained_model_from_the_command_line(tmp_path, capsys):
    assert main(["plot", "--pretrained", "copy", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "memory.png").stat().st_size > 10_000


# -- figures from Python ----------------------------------------------------------------


def test_viz_returns_figures_for_any_model_and_input():
    import matplotlib.figure

    import torchdnc.viz as viz

    dnc = DNC(input_size=4, output_size=4, memory_size=8, word_size=4, num_reads=2)
    x = torch.randn(2, 7, 4)
    figure = viz.model_figure(dnc, x, title="untrained")
    assert isinstance(figure, matplotlib.figure.Figure) and len(figure.axes) >= 6
    _, _, trace = dnc(x, return_trace=True)
    assert isinstance(viz.memory_figure(trace), matplotlib.figure.Figure)
    time_major = DNC(dnc.config, batch_first=False)
    assert isinstance(viz.model_figure(time_major, x.transpose(0, 1), mask=torch.ones(7, 2)),
                      matplotlib.figure.Figure)


def test_the_example_script_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    example = Path(__file__).resolve().parents[1] / "examples" / "memory_figure.py"
    runpy.run_path(str(example), run_name="__main__")
    assert (tmp_path / "memory-untrained.png").is_file() and (tmp_path / "memory-copy.png").is_file()
    assert os.path.getsize(tmp_path / "memory-copy.png") > 10_000
