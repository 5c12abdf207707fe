"""Data that fetches itself: the bAbI v1.2 archive into a per-user cache.

    torchdnc data babi                          # download, check, unpack (once)
    torchdnc data babi --source tasks_1-20_v1-2.tar.gz   # from a file you have

The official archive ``tasks_1-20_v1-2.tar.gz`` is tried at its public
addresses in order (`BABI_URLS`). It is checked before it is used: its SHA-256
against the one published for it (Hugging Face datasets, ``babi_qa``), and in
any case its contents: all 20 tasks in ``en/`` and ``en-10k/`` with their known
numbers of questions (1,000 / 1,000 and 10,000 / 1,000 per task). It is
unpacked (member names checked: no absolute paths, no ``..``) into
``<cache>/babi`` (`torchdnc.data.cache`: ``$TORCHDNC_DATA``, else the platform's
user cache) and never downloaded again: a marker file records a finished,
checked copy. Without network the error says what to do by hand.

`locate_babi` is what the bAbI task uses: the data where they are found
(`torchdnc.data.babi.data_dir_candidates`), else downloaded on first use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from torchdnc.data.babi import ALL_TASKS, ENV_DATA_DIR, resolve_data_dir, task_file
from torchdnc.data.cache import MARKER, babi_cache, is_complete

log = logging.getLogger(__name__)

BABI_ARCHIVE = "tasks_1-20_v1-2.tar.gz"
BABI_URLS = (
    "http://www.thespermwhale.com/jaseweston/babi/tasks_1-20_v1-2.tar.gz",  # the release's own
    "https://s3.amazonaws.com/text-datasets/babi_tasks_1-20_v1-2.tar.gz",  # Keras' mirror
    "https://dl.fbaipublicfiles.com/babi/tasks_1-20_v1-2.tar.gz",
)
# Published for the archive at the first address (huggingface/datasets, babi_qa,
# dataset_infos.json, download_checksums): 15,719,851 bytes.
BABI_SHA256 = "0364ebde659f14d11bc21744516c5ec49d3d06cb692733f66680771244998898"
BABI_QUESTIONS = {"en": (1000, 1000), "en-10k": (10000, 1000)}  # per task: (train, test)
TIMEOUT_SECONDS = 60


class DownloadError(RuntimeError):
    """The data could not be fetched or did not pass its checks."""


def locate_babi(data_dir: str | Path | None = None) -> Path:
    """The bAbI folder: ``data_dir`` if given; else the first of
    `data_dir_candidates` that exists; else downloaded into the cache."""
    try:
        return resolve_data_dir(data_dir)
    except FileNotFoundError:
        if data_dir or os.environ.get(ENV_DATA_DIR):
            raise
    log.warning("torchdnc: the bAbI data are not here yet; downloading them (once)")
    return fetch_babi()


def fetch_babi(source: str | Path | None = None, folder: Path | str | None = None,
               force: bool = False) -> Path:
    """The bAbI folder (with ``en/`` and ``en-10k/``), downloading it first if needed.

    Args:
        source: a path or URL (``file://``, ``http(s)://``) of the archive; None
            tries `BABI_URLS` in order.
        folder: where to unpack (default `babi_cache`).
        force: fetch again even when a checked copy exists.
    """
    folder = Path(folder) if folder else babi_cache()
    if is_complete(folder) and not force:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".babi-") as work:
        work = Path(work)
        archive = _obtain(source, work / BABI_ARCHIVE)
        digest = _sha256(archive)
        if digest != BABI_SHA256:
            log.warning("torchdnc: %s has SHA-256 %s, not the published %s (another packing of "
                        "the release?); its contents are checked instead", archive.name, digest,
                        BABI_SHA256)
        unpacked = work / "babi"
        _unpack(archive, unpacked)
        _check_questions(unpacked)
        (unpacked / MARKER).write_text(f"{BABI_ARCHIVE} sha256 {digest}\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(unpacked, folder)
    log.info("torchdnc: bAbI v1.2 is in %s", folder)
    return folder


def _obtain(source: str | Path | None, target: Path) -> Path:
    if source is not None:
        text = str(source)
        parsed = urlparse(text)
        if parsed.scheme in ("http", "https", "ftp", "file"):
            _download(text, target)
            return target
        path = Path(text).expanduser()
        if not path.is_file():
            raise DownloadError(f"bAbI archive {path} does not exist")
        return path
    failures = []
    for url in BABI_URLS:
        try:
            _download(url, target)
            return target
        except DownloadError as error:
            failures.append(f"{url}: {error}")
            log.warning("torchdnc: %s", failures[-1])
    raise DownloadError(
        "could not download the bAbI archive (" + "; ".join(failures) + "). By hand: fetch "
        f"{BABI_ARCHIVE} from one of {', '.join(BABI_URLS)} on a machine with network, then run "
        f"`torchdnc data babi --source PATH/{BABI_ARCHIVE}` (or point --task.data_dir / "
        "$TORCHDNC_BABI_DIR at a folder holding en/ and en-10k/)")


def _download(url: str, target: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0 (torchdnc)"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response, \
                open(target, "wb") as handle:
            total = int(response.headers.get("Content-Length") or 0)
            bar = _progress(total, f"downloading {url.rsplit('/', 1)[-1]}")
            while chunk := response.read(1 << 20):
                handle.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except (OSError, ValueError) as error:  # URLError, HTTPError, timeouts, bad URLs
        target.unlink(missing_ok=True)
        raise DownloadError(str(getattr(error, "reason", error))) from None


def _progress(total: int, description: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total or None, unit="B", unit_scale=True, desc=description, leave=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unpack(archive: Path, folder: Path) -> None:
    """The en/ and en-10k/ task files and the release's LICENSE and README."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts:
                    raise DownloadError(f"{archive}: unsafe member name {member.name!r}")
                if not member.isfile() or not parts or parts[0] != "tasks_1-20_v1-2":
                    continue
                inner = Path(*parts[1:])
                wanted = (len(inner.parts) == 2 and inner.parts[0] in BABI_QUESTIONS
                          and inner.name.startswith("qa") and inner.suffix == ".txt") or \
                    str(inner) in ("LICENSE.txt", "README.txt")
                if wanted:
                    members.append((member, folder / inner))
            for member, destination in members:
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with source, open(destination, "wb") as handle:
                    shutil.copyfileobj(source, handle)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DownloadError(f"{archive}: not a readable tar.gz archive ({error})") from None


def _check_questions(folder: Path) -> None:
    """All 20 tasks, with their known numbers of questions per split."""
    problems = []
    for split_folder, (train, test) in BABI_QUESTIONS.items():
        ten_k = split_folder == "en-10k"
        for task in ALL_TASKS:
            for split, expected in (("train", train), ("test", test)):
                path = task_file(folder, task, split, ten_k)
                if not path.is_file():
                    problems.append(f"{split_folder}/{path.name} missing")
                    continue
                with open(path, encoding="utf-8", errors="replace") as handle:
                    questions = sum("\t" in line for line in handle)
                if questions != expected:
                    problems.append(f"{split_folder}/{path.name}: {questions} questions, "
                                    f"expected {expected}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DownloadError(f"the bAbI archive is incomplete or not v1.2: {shown}")
