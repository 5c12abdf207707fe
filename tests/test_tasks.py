"""Specification of the tasks: layouts, targets, curricula, metrics."""

from __future__ import annotations

import pytest
import torch

from torchdnc.tasks import TASKS, AssociativeRecallTask, CopyTask, PrioritySortTask, RepeatCopyTask, make_task


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(n for n in TASKS if not TASKS[n].plays_episodes))
def test_every_task_follows_the_interface(name):
    options = {}
    if name == "babi":
        from torchdnc.data.babi import resolve_data_dir

        try:
            resolve_data_dir(None)
        except FileNotFoundError as missing:
            pytest.skip(f"bAbI data not found: {missing}")
        options = {"tasks": "1"}
    task = make_task(name, options)
    levels = task.levels()
    assert levels, "a curriculum has at least one level"
    for params in (levels[0], levels[-1], *task.generalisation().values()):
        batch = task.sample(5, generator(), **params)
        B, T, _ = batch.inputs.shape
        assert batch.inputs.shape == (5, T, task.input_size)
        assert batch.targets.shape == (5, T, task.output_size)
        assert batch.loss_mask.shape == (5, T)
        assert torch.all(batch.loss_mask.sum(1) > 0)
        assert torch.all(batch.targets[batch.loss_mask == 0] == 0)
        again = task.sample(5, generator(), **params)
        assert torch.equal(again.inputs, batch.inputs)  # seeded and deterministic
    perfect = batch.targets * 60 - 30
    metrics = task.metrics(perfect, batch)
    assert metrics[task.primary_metric] == 0 and metrics["sequences"] == 5
    assert task.loss(perfect, batch) < 1e-2
    wrong = -perfect
    wrong_metrics = task.metrics(wrong, batch)
    assert wrong_metrics[task.primary_metric] > 0
    for key in task.report_metrics:  # rates: 1 per sequence when everything is wrong
        assert metrics[key] == 0
        assert wrong_metrics[key] == pytest.approx(5.0)


def test_copy_layout_by_hand():
    task = CopyTask(num_bits=3)
    batch = task.sample(4, generator(1), min_length=2, max_length=5)
    for b, length in enumerate(batch.info["lengths"].tolist()):
        data = batch.inputs[b, :length, :3]
        assert batch.inputs[b, length, 3] == 1  # delimiter
        assert batch.inputs[b, :, 3].sum() == 1
        assert torch.all(batch.inputs[b, length + 1 :] == 0)
        assert torch.equal(batch.targets[b, length + 1 : 2 * length + 1], data)
        assert batch.loss_mask[b].tolist() == [0.0] * (length + 1) + [1.0] * length + \
            [0.0] * (batch.inputs.shape[1] - 2 * length - 1)


def test_copy_curriculum_and_generalisation():
    task = CopyTask(max_length=20, curriculum_start=5, curriculum_levels=4)
    assert [p["max_length"] for p in task.levels()] == [5, 10, 15, 20]
    assert {p["max_length"] for p in task.generalisation().values()} == {40, 80}


def test_repeat_copy_layout_by_hand():
    task = RepeatCopyTask(num_bits=2, norm_max=10)
    batch = task.sample(3, generator(2), min_length=2, max_length=3, min_repeats=2, max_repeats=3)
    for b in range(3):
        length, repeats = int(batch.info["lengths"][b]), int(batch.info["repeats"][b])
        assert batch.inputs[b, 0, 2] == 1  # start marker
        pattern = batch.inputs[b, 1 : length + 1, :2]
        assert batch.inputs[b, length + 1, 3] == pytest.approx(repeats / 10)
        first = length + 2
        expected = pattern.repeat(repeats, 1)
        assert torch.equal(batch.targets[b, first : first + length * repeats, :2], expected)
        end = first + length * repeats
        assert batch.targets[b, end, 2] == 1 and batch.targets[b, :, 2].sum() == 1
        assert batch.loss_mask[b, first : end + 1].sum() == length * repeats + 1
        assert batch.loss_mask[b].sum() == length * repeats + 1


def test_associative_recall_answers_the_next_item():
    task = AssociativeRecallTask(num_bits=4, item_length=3)
    batch = task.sample(6, generator(3), min_items=3, max_items=5)
    for b in range(6):
        count = int(batch.info["items"][b])
        items = [batch.inputs[b, i * 4 + 1 : i * 4 + 4, :4] for i in range(count)]
        assert all(batch.inputs[b, i * 4, 4] == 1 for i in range(count))
        start = count * 4
        assert batch.inputs[b, start, 5] == 1 and batch.inputs[b, start + 4, 5] == 1
        query = batch.inputs[b, start + 1 : start + 4, :4]
        position = next(i for i, item in enumerate(items[:-1]) if torch.equal(item, query))
        answer = batch.targets[b, start + 5 : start + 8]
        assert torch.equal(answer, items[position + 1])
        assert batch.loss_mask[b].sum() == 3


def test_priority_sort_outputs_highest_priority_first():
    task = PrioritySortTask(num_bits=5)
    batch = task.sample(2, generator(4), num_inputs=7, num_outputs=4)
    for b in range(2):
        vectors, priorities = batch.inputs[b, :7, :5], batch.inputs[b, :7, 5]
        order = priorities.argsort(descending=True)[:4]
        assert torch.equal(batch.targets[b, 8:12], vectors[order])
        assert batch.inputs[b, 7, 6] == 1


def test_bad_task_options_are_refused():
    with pytest.raises(ValueError, match="unknown task 'kopy'; valid tasks: \\['associative_recall'"):
        make_task("kopy")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['length'\]; valid options:"):
        make_task("copy", {"length": 3})
    with pytest.raises(ValueError, match="copy: expected min_length <= max_length, got 5 > 2"):
        CopyTask(min_length=5, max_length=2)
    with pytest.raises(ValueError, match="associative_recall.min_items: expected >= 2, got 1"):
        AssociativeRecallTask(min_items=1)


def test_a_recall_cue_marks_where_each_answer_starts():
    task = CopyTask(num_bits=3, min_delay=0, max_delay=4, recall_cue=True)
    batch = task.sample(16, generator(4), min_length=2, max_length=3)
    for b in range(16):
        x, scored = batch.inputs[b], batch.loss_mask[b]
        first = int(scored.nonzero()[0])
        assert x[first - 1, 3] == 1  # a flag the step before the answer, whatever the delay
        flags = x[:, 3].nonzero().flatten().tolist()
        assert len(flags) in (1, 2) and torch.all(x[flags[0] + 1 : first - 1] == 0)
    assert len({int(batch.loss_mask[b].nonzero()[0]) for b in range(16)}) > 1  # delays vary
    with pytest.raises(ValueError, match="copy.recall_cue: expected true or false, got 1"):
        CopyTask(recall_cue=1)


def test_copy_blocks_and_delay_by_hand():
    task = CopyTask(num_bits=3, min_blocks=2, max_blocks=2, min_delay=2, max_delay=2)
    batch = task.sample(3, generator(2), min_length=2, max_length=3)
    for b in range(3):
        x, y, scored = batch.inputs[b], batch.targets[b], batch.loss_mask[b]
        delimiters = x[:, 3].nonzero().flatten().tolist()
        assert len(delimiters) == 2
        t = 0
        for d in delimiters:
            n = d - t
            assert torch.all(x[d + 1 : d + 3] == 0)  # the delay: two blank steps
            assert torch.equal(y[d + 3 : d + 3 + n], x[t:d, :3])
            assert scored[d + 3 : d + 3 + n].sum() == n
            t = d + 3 + n
        assert int(scored.sum()) == int(batch.info["lengths"][b])
    assert CopyTask(min_blocks=1, max_blocks=8, curriculum_by="blocks", curriculum_start=2,
                    curriculum_levels=4).levels()[0]["max_blocks"] == 2
    plain = CopyTask().sample(4, generator(3))
    assert torch.equal(plain.inputs, CopyTask(max_blocks=1).sample(4, generator(3)).inputs)
