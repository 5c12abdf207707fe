"""bAbI question answering as in Graves et al. 2016: all 20 tasks jointly, one word per step.

    task = BabiTask()                                  # en-10k, all 20 tasks
    batch = task.sample(16, torch.Generator().manual_seed(0))
    y, _ = model(batch.inputs, mask=batch.mask)        # [B, T, 159] -> [B, T, 159]
    loss = task.loss(y, batch)

A whole story (all its statements and questions) is one sequence; the inputs
are one-hot words ``[B, T, V]``, the outputs logits over the same vocabulary,
scored only at the '-' steps that follow each question (one per answer word,
see `torchdnc.data.babi`). Stories differ in length (24 to 1,378 steps on
en-10k), so a batch holds stories of similar length, padded; ``Batch.mask``
marks the real steps, and the DNC carries its state unchanged through the
padding. The paper trained on one story at a time (16 asynchronous workers,
batch 1); batches here mix the tasks (``batching="mixed"``): a pool of
``pool_batches`` batches' worth of stories is drawn from the whole training
set, sorted by length, cut into batches, and one of those is used.

Splits: "train" and "valid" hold 90 % / 10 % of each task's training stories
(a fixed split by ``split_seed``), "test" the ``*_test.txt`` files. The data
are read when first needed, so building the task (e.g. to check a config)
does not touch the files.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from torchdnc.data.babi import (ALL_TASKS, EncodedStories, Vocabulary, encode_stories, parse_file,
                                resolve_data_dir, task_file, training_file)
from torchdnc.data.download import locate_babi
from torchdnc.tasks.base import Batch, Task

SPLITS = ("train", "valid", "test")
BATCHING = ("mixed", "buckets")

# Words that only name something and may be swapped for one another without
# changing what a story means: people (within gender, since the pronoun tasks
# refer back by "he" and "she") and places. Used by ``augment``.
INTERCHANGEABLE = (
    ("antoine", "bernhard", "bill", "brian", "daniel", "fred", "greg", "jason", "jeff", "john",
     "julius", "sumit", "yann"),
    ("emily", "gertrude", "jessica", "julie", "lily", "mary", "sandra", "winona"),
    ("bathroom", "bedroom", "cinema", "garden", "hallway", "kitchen", "office", "park", "school"),
)
PLACES = INTERCHANGEABLE[2]
# Tasks whose places carry world knowledge and must keep their names: in task 20
# ("agents' motivations") a hungry person goes to the kitchen and a tired one to
# the bedroom, so renamed places would contradict the answers of other stories.
FIXED_PLACES = (20,)


def parse_task_selection(text: str) -> tuple[int, ...]:
    """``"all"`` or comma-separated task numbers (``"1,2,3"``) -> sorted task numbers."""
    if not isinstance(text, str):
        raise ValueError(f"babi.tasks: expected 'all' or numbers like '1,2,3', got {text!r}")
    if text.strip().lower() == "all":
        return ALL_TASKS
    try:
        tasks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"babi.tasks: expected 'all' or numbers like '1,2,3', got {text!r}") from None
    if not tasks or any(task not in ALL_TASKS for task in tasks):
        raise ValueError(f"babi.tasks: expected task numbers in 1..20, got {text!r}")
    return tuple(tasks)


@dataclass(frozen=True)
class BabiData:
    """The encoded splits of the selected tasks and how the training set is bucketed.

    Attributes:
        vocabulary: built from the selected tasks' training files.
        splits: "train", "valid", "test" -> `EncodedStories`.
        buckets: training story indices, length-sorted, in groups of similar length.
        notes: what differs from the data asked for (a 1k fallback file).
        fallback_tasks: the tasks trained on their 1k file instead of en-10k.
    """

    vocabulary: Vocabulary
    splits: dict[str, EncodedStories]
    buckets: tuple[Tensor, ...]
    notes: tuple[str, ...]
    fallback_tasks: tuple[int, ...]


@functools.lru_cache(maxsize=4)
def load_babi(tasks: tuple[int, ...], data_dir: str, ten_k: bool, valid_fraction: float,
              split_seed: int, bucket_size: int) -> BabiData:
    """Read, split, encode and bucket the data under ``data_dir`` (cached per process)."""
    root = resolve_data_dir(data_dir)
    notes, fallbacks, train, valid, test, every_training_story = [], [], [], [], [], []
    for task in tasks:
        path, note = training_file(root, task, ten_k)
        if note:
            notes.append(note)
            fallbacks.append(task)
        stories = parse_file(path, task)
        every_training_story.extend(stories)
        held_out = round(len(stories) * valid_fraction)
        order = torch.randperm(len(stories), generator=torch.Generator().manual_seed(
            1_000 * split_seed + task)).tolist()
        valid.extend(stories[i] for i in sorted(order[:held_out]))
        train.extend(stories[i] for i in sorted(order[held_out:]))
        test.extend(parse_file(task_file(root, task, "test", ten_k), task))
    vocabulary = Vocabulary.from_stories(every_training_story)
    splits = {name: encode_stories(stories, vocabulary)
              for name, stories in (("train", train), ("valid", valid), ("test", test))}
    by_length = torch.argsort(splits["train"].lengths, stable=True)
    return BabiData(vocabulary, splits, tuple(by_length.split(bucket_size)), tuple(notes),
                    tuple(fallbacks))


def question_mistakes(outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    """Wrong questions per sequence: ``[B]`` counts and ``[B, Q]`` flags.

    A question is wrong unless the most probable word is the target at every
    one of its answer steps.
    """
    scored = batch.loss_mask > 0
    wrong_steps = (outputs.argmax(-1) != batch.targets.argmax(-1)) & scored
    question_index = batch.info["question_index"]  # [B, T], -1 off the answer steps
    most = int(batch.info["questions"].max()) if len(question_index) else 0
    per_question = torch.zeros(len(question_index), most + 1, dtype=torch.long,
                               device=outputs.device)
    per_question.scatter_add_(1, (question_index + 1).clamp(min=0), wrong_steps.long())
    flags = per_question[:, 1:] > 0
    return flags.sum(1), flags


@dataclass
class BabiTask(Task):
    """The 20 bAbI tasks, jointly (Graves et al. 2016, Methods; Extended Data Table 1).

    Options:
        tasks: "all" or task numbers such as "1,2,3".
        data_dir: folder holding ``en/`` and ``en-10k/``; empty for the default
            (``$TORCHDNC_BABI_DIR``, else ``../shared/data/babi``).
        ten_k: train on en-10k (True, as the paper) or on the 1k set ``en/``.
            A missing 10k training file falls back to the 1k file (the copy
            here lacks task 3's), with a warning and a note in `notes`.
        valid_fraction: share of each task's training stories held out.
        split_seed: seeds the held-out choice, independently of training seeds.
        batching: "mixed" (default): a batch is one of ``pool_batches`` length-sorted
            slices of a random pool of stories from all tasks, so tasks mix
            within a batch and padding stays small (see `padding_fraction`,
            `task_mix`); "buckets": a batch comes from one of the fixed
            length buckets of ``bucket_size`` stories (nearly one task each).
        pool_batches: batches per pool in "mixed" batching.
        bucket_size: training stories per length bucket ("buckets").
        augment: not in the paper, off by default. Each training story gets its
            own random renaming of people (within gender) and places among those
            its bAbI task uses (`INTERCHANGEABLE`), applied to the whole story
            and its answers alike: the story means the same, but a small model
            can no longer memorise the training stories (see `augmented`).

    Metrics: ``questions``, ``questions_wrong`` and ``question_error`` (the
    primary metric, the paper's question error rate). They are sums over
    sequences like every task's metrics, so ``question_error`` summed and
    divided by ``sequences`` is the mean over stories of each story's error;
    `finalize_metrics` turns averaged (or summed) metrics into the per-question
    rate ``questions_wrong / questions``.
    """

    name: ClassVar[str] = "babi"
    summary: ClassVar[str] = "bAbI question answering, 20 tasks jointly, one word per step (DNC paper)"
    primary_metric: ClassVar[str] = "question_error"

    tasks: str = "all"
    data_dir: str = ""
    ten_k: bool = True
    valid_fraction: float = 0.1
    split_seed: int = 0
    bucket_size: int = 256
    augment: bool = False
    batching: str = "mixed"
    pool_batches: int = 8

    def __post_init__(self) -> None:
        parse_task_selection(self.tasks)
        if not isinstance(self.data_dir, str):
            raise ValueError(f"babi.data_dir: expected a path as text, got {self.data_dir!r}")
        for name in ("ten_k", "augment"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"babi.{name}: expected True or False, got {getattr(self, name)!r}")
        fraction = self.valid_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"babi.valid_fraction: expected a number in [0, 1), got {fraction!r}")
        if self.batching not in BATCHING:
            raise ValueError(f"babi.batching: expected one of {BATCHING}, got {self.batching!r}")
        for name in ("split_seed", "bucket_size", "pool_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (name != "split_seed"):
                raise ValueError(f"babi.{name}: expected an integer >= {int(name != 'split_seed')}, "
                                 f"got {value!r}")

    # -- data ---------------------------------------------------------------

    @property
    def data(self) -> BabiData:
        """The data, read on first use (and shared by tasks with the same options)."""
        if getattr(self, "_loaded", None) is None:
            root = locate_babi(self.data_dir or None)
            self._loaded = load_babi(parse_task_selection(self.tasks), str(root), self.ten_k,
                                     float(self.valid_fraction), self.split_seed, self.bucket_size)
        return self._loaded

    @property
    def vocabulary(self) -> Vocabulary:
        return self.data.vocabulary

    @property
    def notes(self) -> tuple[str, ...]:
        """Where the data differ from what was asked (e.g. task 3 trained on 1k)."""
        return self.data.notes

    @property
    def input_size(self) -> int:
        return len(self.data.vocabulary)

    @property
    def output_size(self) -> int:
        return len(self.data.vocabulary)

    def levels(self) -> list[dict[str, Any]]:
        return [{}]

    def make_batch(self, split: str, indices: Tensor) -> Batch:
        """The stories ``indices`` of ``split``, padded to the longest of them.

        ``Batch.info``: ``task`` ``[B]`` (bAbI task number), ``questions``
        ``[B]``, ``question_index`` ``[B, T]`` (which question an answer step
        belongs to, -1 elsewhere), ``lengths`` ``[B]`` and ``story`` ``[B]``
        (index in the split).
        """
        stories = self.data.splits[split]
        indices = torch.as_tensor(indices, dtype=torch.long)
        return self._batch(stories, indices, *stories.padded(indices))

    def _batch(self, stories: EncodedStories, indices: Tensor, tokens: Tensor, targets: Tensor,
               question_index: Tensor, valid: Tensor) -> Batch:
        size = len(self.data.vocabulary)
        inputs = F.one_hot(tokens.clamp(min=0), size).float() * valid.unsqueeze(-1)
        scored = targets >= 0
        one_hot_targets = F.one_hot(targets.clamp(min=0), size).float() * scored.unsqueeze(-1)
        return Batch(inputs, one_hot_targets, scored.float(), mask=valid,
                     info={"task": stories.tasks[indices], "questions": stories.questions[indices],
                           "question_index": question_index, "lengths": stories.lengths[indices],
                           "story": indices})

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Training stories of similar length, drawn with ``generator`` only.

        "mixed": ``pool_batches * batch_size`` distinct stories drawn uniformly
        from the whole training set, sorted by length, cut into ``pool_batches``
        slices; one slice, drawn uniformly, is the batch. "buckets": a bucket is
        drawn with probability proportional to its size, then ``batch_size``
        distinct stories within it. Either way every story is equally likely
        (repeats only when there are fewer stories than a batch).
        """
        if self.batching == "mixed":
            chosen = self._mixed(batch_size, generator)
        else:
            buckets = self.data.buckets
            sizes = torch.tensor([len(bucket) for bucket in buckets], dtype=torch.float)
            chosen = _draw(buckets[int(torch.multinomial(sizes, 1, generator=generator))],
                           batch_size, generator)
        if self.augment:
            return self.augmented(chosen, generator)
        return self.make_batch("train", chosen)

    def _mixed(self, batch_size: int, generator: torch.Generator) -> Tensor:
        lengths = self.data.splits["train"].lengths
        pool = _draw(torch.arange(len(lengths)), self.pool_batches * batch_size, generator)
        pool = pool[torch.argsort(lengths[pool], stable=True)]
        slices = pool.split(batch_size)
        return slices[int(torch.randint(len(slices), (), generator=generator))]

    def task_mix(self, batch_size: int, batches: int, seed: int = 0) -> float:
        """Mean share of a training batch held by its most common bAbI task."""
        generator = torch.Generator().manual_seed(seed)
        shares = []
        for _ in range(batches):
            tasks = self.sample(batch_size, generator).info["task"]
            shares.append(float(torch.bincount(tasks).max()) / len(tasks))
        return sum(shares) / len(shares)

    def interchangeable_ids(self) -> dict[int, list[Tensor]]:
        """bAbI task -> groups of word ids (`INTERCHANGEABLE`) used in its training stories."""
        if getattr(self, "_groups", None) is None:
            stories, index = self.data.splits["train"], self.data.vocabulary.index
            groups: dict[int, list[Tensor]] = {}
            for babi_task in sorted(set(stories.tasks.tolist())):
                spans = [(int(stories.offsets[i]), int(stories.offsets[i + 1]))
                         for i in torch.nonzero(stories.tasks == babi_task).flatten().tolist()]
                used = set(torch.cat([stories.tokens[a:b] for a, b in spans]).tolist())
                used |= set(torch.cat([stories.targets[a:b] for a, b in spans]).tolist())
                found = [torch.tensor(sorted(index[w] for w in group if index.get(w) in used))
                         for group in INTERCHANGEABLE
                         if not (group is PLACES and babi_task in FIXED_PLACES)]
                groups[babi_task] = [ids for ids in found if len(ids) > 1]
            self._groups = groups
        return self._groups

    def augmented(self, indices: Tensor, generator: torch.Generator) -> Batch:
        """Training stories ``indices``, each with its own renaming (``augment``).

        Every interchangeable group of the story's task is permuted at random
        (by ``generator``), and the same word map is applied to the inputs and
        the answers.
        """
        stories = self.data.splits["train"]
        tokens, targets, question_index, valid = stories.padded(indices)
        groups = self.interchangeable_ids()
        size = len(self.data.vocabulary)
        maps = torch.arange(size).repeat(len(indices), 1)
        for row, babi_task in enumerate(stories.tasks[indices].tolist()):
            for ids in groups.get(babi_task, ()):
                maps[row, ids] = ids[torch.randperm(len(ids), generator=generator)]
        tokens = torch.where(valid, maps.gather(1, tokens.clamp(min=0)), tokens)
        targets = torch.where(targets >= 0, maps.gather(1, targets.clamp(min=0)), targets)
        return self._batch(stories, indices, tokens, targets, question_index, valid)

    def validation_batches(self, batch_size: int, generator: torch.Generator,
                           batches: int | None = 0, split: str = "valid") -> Iterator[Batch]:
        """Length-sorted batches of ``split`` ("valid", "test" or "train").

        ``batches`` >= 1: that many batches' worth of stories drawn at random
        (without repeats, by ``generator``), as the training loop's periodic
        evaluations want; 0 or None: the whole split, each story once.
        """
        if split not in SPLITS:
            raise ValueError(f"babi split: expected one of {SPLITS}, got {split!r}")
        stories = self.data.splits[split]
        count = len(stories)
        if batches and batches * batch_size < count:
            chosen = torch.randperm(count, generator=generator)[: batches * batch_size]
        else:
            chosen = torch.arange(count)
        chosen = chosen[torch.argsort(stories.lengths[chosen], stable=True)]
        for start in range(0, len(chosen), batch_size):
            yield self.make_batch(split, chosen[start : start + batch_size])

    def padding_fraction(self, batch_size: int, batches: int, seed: int = 0) -> float:
        """Share of padded steps in ``batches`` training batches (a bucketing check)."""
        generator = torch.Generator().manual_seed(seed)
        real = padded = 0
        for _ in range(batches):
            valid = self.sample(batch_size, generator).mask
            real, padded = real + int(valid.sum()), padded + valid.numel()
        return 1.0 - real / padded

    # -- scoring --------------------------------------------------------------

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy of the softmax at the answer steps, summed, mean over sequences."""
        log_probabilities = F.log_softmax(outputs, dim=-1)
        per_step = -(log_probabilities * batch.targets).sum(-1) * batch.loss_mask
        return per_step.sum() / outputs.shape[0]

    def metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        wrong, _ = question_mistakes(outputs, batch)
        questions = batch.info["questions"].to(wrong.device)
        return {
            "sequences": float(outputs.shape[0]),
            "questions": float(questions.sum()),
            "questions_wrong": float(wrong.sum()),
            "question_error": float((wrong / questions.clamp(min=1)).sum()),
        }

    def finalize_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """``question_error`` = ``questions_wrong / questions`` (per question).

        Works on summed metrics and on per-sequence means alike (the ratio is
        the same); other entries are returned unchanged.
        """
        result = dict(metrics)
        if result.get("questions", 0) > 0:
            result["question_error"] = result["questions_wrong"] / result["questions"]
        return result

    def story_words(self, split: str, index: int) -> list[str]:
        """The input words of story ``index`` of ``split`` ('-' at answer steps)."""
        stories = self.data.splits[split]
        start, end = int(stories.offsets[index]), int(stories.offsets[index + 1])
        return self.data.vocabulary.decode(stories.tokens[start:end].long().tolist())

    def find_story(self, split: str, babi_task: int, number: int = 0) -> int:
        """Index in ``split`` of the ``number``-th story (file order) of bAbI task ``babi_task``."""
        matches = torch.nonzero(self.data.splits[split].tasks == babi_task).flatten()
        if number >= len(matches):
            raise ValueError(f"babi: {split} split has {len(matches)} stories of task {babi_task}, "
                             f"asked for number {number}")
        return int(matches[number])


def _draw(indices: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` of ``indices``, without repeats where there are enough."""
    if len(indices) >= count:
        return indices[torch.randperm(len(indices), generator=generator)[:count]]
    return indices[torch.randint(len(indices), (count,), generator=generator)]


def story_counts(task: BabiTask) -> dict[str, dict[int, int]]:
    """Stories per split and bAbI task (a summary for logs and reports)."""
    counts = {}
    for split in SPLITS:
        tasks = task.data.splits[split].tasks
        counts[split] = {int(t): int((tasks == t).sum()) for t in tasks.unique()}
    return counts


def length_summary(task: BabiTask, split: str = "train") -> dict[int, dict[str, int]]:
    """Story length in time steps per bAbI task: median, 90th percentile, max."""
    stories = task.data.splits[split]
    summary = {}
    for babi_task in stories.tasks.unique().tolist():
        lengths = stories.lengths[stories.tasks == babi_task].double()
        summary[babi_task] = {"median": int(lengths.median()),
                              "p90": int(math.ceil(float(torch.quantile(lengths, 0.9)))),
                              "max": int(lengths.max())}
    return summary
