"""Specification of the bAbI pipeline: reader, encoding, splits, batching, metrics, report.

Most tests run on small hand-written files in ``tmp_path``; the ones that need
the real data (../shared/data/babi, next to the repository) skip without it.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from torchdnc import DNC
from torchdnc.data.babi import (ANSWER_TOKEN, BabiFallbackWarning, Vocabulary, data_dir_candidates,
                                encode_story, parse_file, parse_lines, resolve_data_dir, task_file,
                                training_file)
from torchdnc.tasks.babi import PLACES, BabiTask, parse_task_selection
from torchdnc.evaluation.babi import (PAPER_DNC1, PAPER_LSTM, BabiReport, TaskScore,
                                      evaluate_per_task)
from torchdnc.tasks import evaluate
from torchdnc.viz.babi import answer_reads, plot_story

TASK1_TRAIN = """\
1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the kitchen.
5 Where is Daniel? \tkitchen\t4
1 Sandra journeyed to the garden.
2 Where is Sandra? \tgarden\t1
1 John went to the kitchen.
2 Where is John? \tkitchen\t1
"""
# Four questions; a model that always says "kitchen" gets exactly one right.
TASK1_TEST = """\
1 Mary moved to the kitchen.
2 Where is Mary? \tkitchen\t1
3 John went to the garden.
4 Where is John? \tgarden\t3
1 Sandra went to the bathroom.
2 Where is Sandra? \tbathroom\t1
3 Sandra moved to the garden.
4 Where is Sandra? \tgarden\t3
"""
# Task 19 writes no space before the tab; its answers are paths "s,w".
TASK19 = """\
1 The office is east of the hallway.
2 The kitchen is north of the office.
3 How do you go from the kitchen to the hallway?\ts,w\t2 1
"""
TASK8 = """\
1 Mary got the apple there.
2 Mary took the football there.
3 What is Mary carrying? \tapple,football\t1 2
4 Mary dropped the apple.
5 What is Mary carrying? \tfootball\t2 4
"""


def write_files(root: Path, files: dict[tuple[str, int, str], str]) -> Path:
    """``{(folder, task, split): text}`` as bAbI files under ``root``."""
    for (folder, task, split), text in files.items():
        path = task_file(root, task, split, ten_k=folder == "en-10k")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """Tasks 1, 8 and 19 in en-10k; task 3 only in en (its 10k training file missing)."""
    files = {}
    for folder in ("en-10k", "en"):
        files.update({(folder, 1, "train"): TASK1_TRAIN, (folder, 1, "test"): TASK1_TEST,
                      (folder, 8, "train"): TASK8, (folder, 8, "test"): TASK8,
                      (folder, 19, "train"): TASK19, (folder, 19, "test"): TASK19})
    files[("en", 3, "train")] = TASK1_TRAIN
    files[("en-10k", 3, "test")] = TASK1_TEST
    return write_files(tmp_path / "babi", files)


def real_root() -> Path:
    try:
        return resolve_data_dir()
    except FileNotFoundError:
        pytest.skip("the bAbI data (../shared/data/babi next to the repository, or "
                    "$TORCHDNC_BABI_DIR) is not present in this checkout")


# -- reader ------------------------------------------------------------------------


def test_parser_reads_stories_questions_answers_and_supporting_facts(tmp_path):
    path = tmp_path / "qa.txt"
    path.write_text(TASK1_TRAIN + TASK8 + TASK19)
    stories = parse_file(path, task=1)
    assert [len(s.lines) for s in stories] == [5, 2, 2, 5, 3]  # an ID of 1 starts a story
    first = stories[0]
    assert first.lines[0].words == ("mary", "moved", "to", "the", "bathroom", ".")
    question = first.lines[2]
    assert question.words == ("where", "is", "mary", "?")
    assert question.answer == ("bathroom",) and question.supporting == (1,)
    assert (question.line_id, question.line) == (3, 3)  # ID in the story, line in the file
    assert stories[3].questions[0].answer == ("apple", "football")  # task 8: a list
    assert stories[3].questions[0].supporting == (1, 2)
    path_question = stories[4].questions[0]
    assert path_question.answer == ("s", "w") and path_question.supporting == (2, 1)  # task 19
    assert path_question.words[-1] == "?" and path_question.line == 17
    assert all(s.task == 1 and s.source == str(path) for s in stories)


@pytest.mark.parametrize("line, reason", [
    ("Mary went to the garden.", "expected 'ID text'"),
    ("2 Where is Mary? \tgarden", "3 tab-separated fields"),
    ("2 Where is Mary? \tgarden\tone", "must be integers"),
    ("2 Where is Mary? \tgarden\t2", r"must lie in 1\.\.1"),
    ("2 Where is Mary? \t\t1", "empty question or answer"),
    ("3 Mary went to the garden.", "does not follow 1"),
])
def test_a_malformed_line_names_the_file_and_line_number(tmp_path, line, reason):
    path = tmp_path / "qa1_bad.txt"
    path.write_text("1 Mary went to the kitchen.\n" + line + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: ") + f".*{reason}"):
        parse_file(path)


def test_a_missing_file_or_folder_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "qa1_single-supporting-fact_train.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        parse_file(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        resolve_data_dir(tmp_path / "nowhere")
    wanted = task_file(tmp_path, 2, "train")
    with pytest.raises(FileNotFoundError, match=re.escape(str(wanted))):
        training_file(tmp_path, 2)
    task = BabiTask(data_dir=str(tmp_path / "nowhere"))  # building the task reads nothing
    with pytest.raises(FileNotFoundError, match="nowhere"):
        task.input_size


def test_default_folder_comes_from_the_environment_first(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHDNC_BABI_DIR", str(tmp_path))
    assert data_dir_candidates() == [tmp_path] and resolve_data_dir() == tmp_path
    monkeypatch.setenv("TORCHDNC_BABI_DIR", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="absent.*TORCHDNC_BABI_DIR"):
        resolve_data_dir()
    monkeypatch.delenv("TORCHDNC_BABI_DIR")
    assert all(p.parts[-3:] == ("shared", "data", "babi") for p in data_dir_candidates())


# -- encoding -----------------------------------------------------------------------


def test_story_encoding_by_hand():
    story = parse_lines(TASK8.splitlines(), "qa8")[0]
    encoded = encode_story(story)
    statement_1 = ["mary", "got", "the", "apple", "there", "."]
    statement_2 = ["mary", "took", "the", "football", "there", "."]
    question = ["what", "is", "mary", "carrying", "?"]
    statement_4 = ["mary", "dropped", "the", "apple", "."]
    assert encoded.inputs == (statement_1 + statement_2 + question + ["-", "-"]
                              + statement_4 + question + ["-"])
    answers = [None] * 30
    answers[17], answers[18], answers[29] = "apple", "football", "football"
    assert encoded.answers == answers
    assert encoded.question_index == [-1] * 17 + [0, 0] + [-1] * 10 + [1]


def test_batch_layout_by_hand(fake_root):
    task = BabiTask(tasks="1", data_dir=str(fake_root), valid_fraction=0.0)
    vocabulary = task.vocabulary
    assert vocabulary.words[:3] == (".", "?", ANSWER_TOKEN)
    assert vocabulary.words[3:] == tuple(sorted(vocabulary.words[3:]))
    assert task.input_size == task.output_size == len(vocabulary) == 3 + 16
    batch = task.make_batch("train", torch.tensor([1, 0]))  # 11 and 29 steps
    words = ["sandra", "journeyed", "to", "the", "garden", ".", "where", "is", "sandra", "?", "-"]
    assert batch.inputs.shape == (2, 29, len(vocabulary))
    assert batch.inputs[0, :11].argmax(-1).tolist() == [vocabulary.index[w] for w in words]
    assert torch.all(batch.inputs.sum(-1) == batch.mask.float())  # one-hot, zero on padding
    assert batch.mask.tolist() == [[True] * 11 + [False] * 18, [True] * 29]
    assert batch.loss_mask[0].nonzero().flatten().tolist() == [10]
    assert batch.loss_mask[1].nonzero().flatten().tolist() == [16, 28]
    assert batch.targets[0, 10].argmax() == vocabulary.index["garden"]
    assert batch.targets[1, 16].argmax() == vocabulary.index["bathroom"]
    assert batch.targets[1, 28].argmax() == vocabulary.index["kitchen"]
    assert batch.targets.sum() == 3 and batch.targets[batch.loss_mask == 0].sum() == 0
    assert batch.info["questions"].tolist() == [1, 2] and batch.info["task"].tolist() == [1, 1]
    assert batch.info["question_index"][1, [16, 28]].tolist() == [0, 1]
    assert task.story_words("train", 1) == words


def test_vocabulary_of_en_10k_is_the_papers_159():
    """156 words + '.', '?', '-' (Graves et al. 2016, Methods); task 3 from its 1k file."""
    root = real_root()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BabiFallbackWarning)
        training = [s for t in range(1, 21) for s in parse_file(training_file(root, t)[0], t)]
    vocabulary = Vocabulary.from_stories(training)
    assert len(vocabulary) == 159
    assert {"n", "s", "e", "w", "nothing", "none", "three"} <= set(vocabulary.words)  # answers
    test = [s for t in range(1, 21) for s in parse_file(task_file(root, t, "test"), t)]
    assert set(Vocabulary.from_stories(test).words) <= set(vocabulary.words)


def test_missing_10k_training_file_falls_back_to_1k_and_says_so(fake_root):
    with pytest.warns(BabiFallbackWarning, match="task 3: .*en-10k.*missing.*1k file"):
        path, note = training_file(fake_root, 3)
    assert path == task_file(fake_root, 3, "train", ten_k=False) and "1,000" in note
    assert training_file(fake_root, 1) == (task_file(fake_root, 1, "train"), None)
    with pytest.warns(BabiFallbackWarning):
        task = BabiTask(tasks="1,3", data_dir=str(fake_root))
        assert task.data.fallback_tasks == (3,)
    assert len(task.notes) == 1 and task.notes[0].startswith("task 3:")


def test_real_task_3_falls_back_to_the_1k_file():
    root = real_root()
    if task_file(root, 3, "train").exists():
        pytest.skip("this copy of en-10k has task 3's training file")
    with pytest.warns(BabiFallbackWarning):
        path, note = training_file(root, 3)
    assert path.parent.name == "en" and note


# -- splits and batching ---------------------------------------------------------------


def many_stories(count: int, seed: int = 0) -> str:
    """``count`` task-1 stories of 1 to 6 statements and 1 to 3 questions."""
    generator = torch.Generator().manual_seed(seed)
    places = ["kitchen", "garden", "hallway", "bathroom"]
    lines = []
    for _ in range(count):
        line_id = 0
        for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
            for _ in range(int(torch.randint(1, 3, (1,), generator=generator))):
                line_id += 1
                place = places[int(torch.randint(4, (1,), generator=generator))]
                lines.append(f"{line_id} Mary went to the {place}.")
            line_id += 1
            lines.append(f"{line_id} Where is Mary? \t{place}\t{line_id - 1}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def varied_root(tmp_path: Path) -> Path:
    return write_files(tmp_path / "babi", {("en-10k", 1, "train"): many_stories(200),
                                           ("en-10k", 1, "test"): many_stories(30, seed=1)})


def test_validation_split_is_a_fixed_tenth_of_each_tasks_stories(varied_root):
    task = BabiTask(tasks="1", data_dir=str(varied_root))
    splits = task.data.splits
    assert (len(splits["train"]), len(splits["valid"]), len(splits["test"])) == (180, 20, 30)
    again = BabiTask(tasks="1", data_dir=str(varied_root), bucket_size=255)
    assert torch.equal(again.data.splits["valid"].tokens, splits["valid"].tokens)
    other = BabiTask(tasks="1", data_dir=str(varied_root), split_seed=1)
    assert not torch.equal(other.data.splits["valid"].tokens, splits["valid"].tokens)
    everything = splits["train"].tokens.numel() + splits["valid"].tokens.numel()
    assert everything == other.data.splits["train"].tokens.numel() + \
        other.data.splits["valid"].tokens.numel()


def test_training_batches_group_stories_of_similar_length(varied_root):
    task = BabiTask(tasks="1", data_dir=str(varied_root), bucket_size=30, batching="buckets")
    lengths = task.data.splits["train"].lengths
    edges = [(int(lengths[b].min()), int(lengths[b].max())) for b in task.data.buckets]
    assert sum(len(b) for b in task.data.buckets) == 180
    assert all(edges[i][1] <= edges[i + 1][0] for i in range(len(edges) - 1))  # sorted buckets
    generator = torch.Generator().manual_seed(3)
    for _ in range(10):
        batch = task.sample(8, generator)
        low, high = int(batch.info["lengths"].min()), int(batch.info["lengths"].max())
        assert any(a <= low and high <= b for a, b in edges)
        assert len(set(batch.info["story"].tolist())) == 8  # distinct stories
        steps = torch.arange(batch.inputs.shape[1])
        assert torch.equal(batch.mask, steps[None] < batch.info["lengths"][:, None])
        assert batch.inputs.shape[1] == high
    first, again = (task.sample(8, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(first.inputs, again.inputs)  # the generator alone decides
    assert task.padding_fraction(8, 20) < 0.35


def test_validation_batches_walk_the_split_in_length_order(varied_root):
    task = BabiTask(tasks="1", data_dir=str(varied_root))
    batches = list(task.validation_batches(7, torch.Generator(), 0, split="test"))
    stories = torch.cat([b.info["story"] for b in batches])
    assert sorted(stories.tolist()) == list(range(30))
    lengths = torch.cat([b.info["lengths"] for b in batches])
    assert torch.all(lengths[1:] >= lengths[:-1])
    some = list(task.validation_batches(7, torch.Generator().manual_seed(0), 2))  # split "valid"
    assert sum(len(b.info["story"]) for b in some) == 14
    with pytest.raises(ValueError, match="split"):
        next(task.validation_batches(7, torch.Generator(), 0, split="dev"))


# -- loss and metrics -----------------------------------------------------------------


def test_metrics_on_perfect_and_wrong_outputs(fake_root):
    task = BabiTask(tasks="1,8", data_dir=str(fake_root), valid_fraction=0.0)
    batch = next(task.validation_batches(8, torch.Generator(), 0, split="train"))
    questions = int(batch.info["questions"].sum())
    assert questions == 4 + 2  # task 1: 2 + 1 + 1; task 8: 2
    perfect = batch.targets * 60 - 30
    metrics = task.metrics(perfect, batch)
    assert metrics == {"sequences": 4.0, "questions": 6.0, "questions_wrong": 0.0, "question_error": 0.0}
    assert task.loss(perfect, batch) < 1e-6
    assert task.metrics(-perfect, batch)["questions_wrong"] == 6.0
    # One wrong word of the two-word answer "apple football" makes that question wrong.
    story = int((batch.info["task"] == 8).nonzero()[0])
    first_answer_step = int(batch.loss_mask[story].nonzero()[0])
    one_slip = perfect.clone()
    one_slip[story, first_answer_step] = -perfect[story, first_answer_step]
    metrics = task.metrics(one_slip, batch)
    assert metrics["questions_wrong"] == 1.0 and metrics["question_error"] == pytest.approx(0.5)
    final = task.finalize_metrics({k: v / 4 for k, v in metrics.items()})  # per-sequence means
    assert final["question_error"] == pytest.approx(1 / 6)  # per question, not per story


def test_loss_is_cross_entropy_summed_over_answer_steps_mean_over_sequences(fake_root):
    task = BabiTask(tasks="1", data_dir=str(fake_root), valid_fraction=0.0)
    batch = task.make_batch("train", torch.tensor([0, 1, 2]))
    uniform = torch.zeros_like(batch.targets)
    answer_steps = 4
    expected = answer_steps * math.log(task.output_size) / 3
    assert float(task.loss(uniform, batch)) == pytest.approx(expected)


def test_training_loop_evaluation_runs_on_the_task(varied_root):
    task = BabiTask(tasks="1", data_dir=str(varied_root))
    model = DNC(input_size=task.input_size, output_size=task.output_size, hidden_size=8,
                memory_size=6, word_size=4, num_reads=2)
    metrics = evaluate(model, task, task.levels()[0], 2, 4, torch.Generator(), torch.device("cpu"))
    assert metrics["sequences"] == 8 and 0 <= metrics["question_error"] <= 1
    final = task.finalize_metrics(metrics)
    assert final["question_error"] == pytest.approx(metrics["questions_wrong"] / metrics["questions"])
    batch = task.sample(4, torch.Generator().manual_seed(0))
    half = batch[slice(0, 2)]  # how the loop splits a batch across DDP ranks
    assert half.info["question_index"].shape == (2, batch.inputs.shape[1])
    y, _ = model(half.inputs, mask=half.mask)
    assert torch.isfinite(task.loss(y, half))


def test_augment_renames_people_and_places_consistently_across_story_and_answers(fake_root):
    plain = BabiTask(tasks="1", data_dir=str(fake_root), valid_fraction=0.0)
    task = BabiTask(tasks="1", data_dir=str(fake_root), valid_fraction=0.0, augment=True)
    words = task.vocabulary.words
    people_f, people_m = {"mary", "sandra"}, {"daniel", "john"}
    places = {"bathroom", "garden", "hallway", "kitchen"}
    assert [sorted(words[i] for i in ids.tolist()) for ids in task.interchangeable_ids()[1]] == \
        [sorted(people_m), sorted(people_f), sorted(places)]
    renamed = False
    for seed in range(20):
        batch = task.sample(2, torch.Generator().manual_seed(seed))
        original = plain.make_batch("train", batch.info["story"])
        assert torch.equal(batch.mask, original.mask) and torch.equal(batch.loss_mask, original.loss_mask)
        for row in range(2):
            valid = batch.mask[row]
            seen = batch.inputs[row, valid].argmax(-1).tolist()
            was = original.inputs[row, valid].argmax(-1).tolist()
            answers = batch.targets[row][batch.loss_mask[row] > 0].argmax(-1).tolist()
            answers_were = original.targets[row][original.loss_mask[row] > 0].argmax(-1).tolist()
            word_map: dict[int, int] = {}
            for old, new in zip(was + answers_were, seen + answers):
                assert word_map.setdefault(old, new) == new  # one map for story and answers
            assert len(set(word_map.values())) == len(word_map)  # a renaming, not a merge
            for old, new in word_map.items():
                same_class = [c for c in (people_f, people_m, places) if words[old] in c]
                assert (old == new) if not same_class else words[new] in same_class[0]
                renamed |= old != new
    assert renamed
    # Seeded like every draw, and validation data are never renamed.
    first = task.sample(2, torch.Generator().manual_seed(3))
    assert torch.equal(first.inputs, task.sample(2, torch.Generator().manual_seed(3)).inputs)
    assert torch.equal(next(task.validation_batches(2, torch.Generator(), split="test")).inputs,
                       next(plain.validation_batches(2, torch.Generator(), split="test")).inputs)
    with pytest.raises(ValueError, match="babi.augment"):
        BabiTask(augment="yes")


def test_augment_keeps_the_places_of_task_20_whose_answers_depend_on_them():
    # Task 20: a hungry person goes to the kitchen, a tired one to the bedroom.
    # Renamed places would teach a different rule in every story.
    task = BabiTask(tasks="1,20", data_dir=str(real_root()), augment=True)
    words = task.vocabulary.words

    def renamed(babi_task):
        return {words[i] for ids in task.interchangeable_ids()[babi_task] for i in ids.tolist()}

    assert not renamed(20) & set(PLACES) and renamed(20)  # its people still are
    assert {"kitchen", "garden"} <= renamed(1)


def test_options_are_checked_without_reading_data():
    assert parse_task_selection("all") == tuple(range(1, 21))
    assert parse_task_selection("3, 1,3") == (1, 3)
    for bad in ("0", "21", "one", ""):
        with pytest.raises(ValueError, match="babi.tasks"):
            BabiTask(tasks=bad)
    with pytest.raises(ValueError, match="valid_fraction"):
        BabiTask(valid_fraction=1.0)
    with pytest.raises(ValueError, match="bucket_size"):
        BabiTask(bucket_size=0)


# -- report and plot --------------------------------------------------------------------


class AlwaysSays(nn.Module):
    """A stand-in model whose output is one word at every step."""

    def __init__(self, word: int, size: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(word), size).float() * 10)

    def forward(self, x, state=None, mask=None):
        return self.logits.expand(*x.shape[:2], -1), None


def test_per_task_table_on_a_fake_model(fake_root):
    task = BabiTask(tasks="1,3,19", data_dir=str(fake_root))
    with pytest.warns(BabiFallbackWarning):
        task.data
    model = AlwaysSays(task.vocabulary.index["kitchen"], task.output_size)
    report = evaluate_per_task(model, task, split="test", batch_size=3, model_name="kitchen")
    assert {t: (s.questions, s.wrong) for t, s in report.scores.items()} == \
        {1: (4, 3), 3: (4, 3), 19: (1, 1)}
    assert report.mean_error == pytest.approx((75 + 75 + 100) / 3) and report.failed == 3
    markdown = report.to_markdown()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and ": " in line]
    assert len(rows) == 20
    assert rows[0] == "| 1: single supporting fact | 4 | 3 | 75.0 | 9.0 ± 12.6 | 28.4 ± 1.5 |"
    assert rows[2].startswith("| 3: three supporting facts † | 4 | 3 | 75.0 |")
    assert rows[1] == "| 2: two supporting facts | - | - | - | 39.2 ± 20.5 | 56.0 ± 1.5 |"
    assert "| mean error (%) (3 tasks) | | | 83.3 | 16.7 ± 7.6 | 27.3 ± 0.8 |" in markdown
    assert "task 3:" in markdown  # the fallback is reported
    table = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(table) == 20 and table[18]["error_percent"] == "100.0"
    assert table[2]["note"] == "trained on the 1k file" and table[17]["paper_lstm_mean"] == ""
    assert len(PAPER_DNC1) == len(PAPER_LSTM) == 20


def test_report_counts_a_task_failed_only_above_five_percent():
    report = BabiReport({1: TaskScore(1, 1000, 50), 2: TaskScore(2, 1000, 51)}, "test")
    assert report.failed == 1 and report.mean_error == pytest.approx(5.05)


def test_answer_reads_follow_the_rows_by_hand():
    steps, slots = 4, 3
    write = torch.zeros(1, steps, 1, slots)
    write[0, 0, 0, 2] = write[0, 1, 0, 0] = 1.0  # "mary" into row 2, "kitchen" into row 0
    read = torch.zeros(1, steps, 2, slots)
    read[0, 3, 0, 0] = 0.9  # at the answer step head 0 reads row 0, head 1 row 2
    read[0, 3, 1, 2] = 0.7
    trace = SimpleNamespace(write_weights=write, read_weights=read)
    outputs = torch.zeros(steps, 3)
    outputs[3, 1] = 1.0
    result = answer_reads(outputs, trace, ["mary", "kitchen", "?", "-"],
                          [None, None, None, "kitchen"], ("mary", "kitchen", "garden"))
    assert result == [{"step": 3, "target": "kitchen", "output": "kitchen",
                       "reads": [(0, pytest.approx(0.9), 1, "kitchen"),
                                 (2, pytest.approx(0.7), 0, "mary")]}]


def test_story_plot_is_written(fake_root, tmp_path):
    task = BabiTask(tasks="1", data_dir=str(fake_root))
    model = DNC(input_size=task.input_size, output_size=task.output_size, hidden_size=8,
                memory_size=5, word_size=4, num_reads=2)
    path = plot_story(model, task, tmp_path / "plots" / "story.png", babi_task=1, number=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="2 stories of task 1"):
        plot_story(model, task, tmp_path / "x.png", babi_task=1, number=2)


def test_mixed_batches_mix_the_tasks_and_keep_padding_small():
    """Batches drawn from a length-sorted pool of all tasks (the default), against
    the fixed length buckets, which are nearly one task each."""
    root = str(real_root())
    mixed, buckets = BabiTask(data_dir=root), BabiTask(data_dir=root, batching="buckets")
    assert mixed.task_mix(16, 100) < 0.7 < buckets.task_mix(16, 100)
    assert mixed.padding_fraction(16, 100) < 0.4
    batch = mixed.sample(16, torch.Generator().manual_seed(0))
    assert len(set(batch.info["story"].tolist())) == 16
    again = mixed.sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(batch.inputs, again.inputs)


def test_mixed_batching_draws_every_story_equally_often(varied_root):
    task = BabiTask(tasks="1", data_dir=str(varied_root), pool_batches=4)
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(len(task.data.splits["train"].lengths))
    for _ in range(3000):
        counts.index_add_(0, task.sample(5, generator).info["story"], torch.ones(5))
    expected = 3000 * 5 / len(counts)  # about 83; Poisson spread about 9
    assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected
