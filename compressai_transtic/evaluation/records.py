"""Per-image evaluation records (JSON lines) that make evaluations resumable.

Every finished (rate point, task, image) is appended as one JSON line, flushed and
fsync'ed before the next image starts. A restarted evaluation reads the file and skips
what it holds. Only an index (key -> position in the file) is kept in memory: a full COCO
run holds millions of detections, which are read back one rate point at a time.

Nothing finished is thrown away because of a damaged line: a line cut short by a crash,
NUL bytes left by a file system, or a record whose fields have the wrong type or an
impossible value (a ``bpp`` that is a string, or not ``8 * bytes / pixels``; a
prediction that its task cannot use) is
moved to the side file ``<name>.damaged`` (appended, never overwritten), reported, and
recomputed; every good record is kept. One evaluation at a time may write to a file: a
second one is refused with the process id of the first (an advisory ``flock`` on
``<name>.lock``, where the platform has one).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Set, Tuple

from ..console import shorten
from ..metrics import MS_SSIM_MAX

__all__ = [
    "REFERENCE_CODEC",
    "RecordKey",
    "RecordStore",
    "RecordsLockedError",
    "as_number",
    "record_problem",
    "stored_keys",
]

logger = logging.getLogger(__name__)

#: (codec key, task key, image id as text)
RecordKey = Tuple[str, str, str]
#: a task's check of one of its stored predictions: (task key, prediction) -> problem or None
PredictionCheck = Callable[[str, Any], Optional[str]]
#: the codec key of uncompressed-reference records (they have no rate)
REFERENCE_CODEC = "reference"


class RecordsLockedError(RuntimeError):
    """Another evaluation is writing to the same records file."""


#: the largest byte or pixel count of a record (exact in a float, far above any image)
_MAX_COUNT = 2**53


def as_number(value: Any) -> Optional[float]:
    """``value`` as a float when it is a JSON number (not a boolean, not an integer
    beyond the float range), else ``None``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond the float range
            return None
    return None


def record_problem(record: Any) -> Optional[str]:
    """What is wrong with a record read back from the file, or ``None`` when it is sound."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for field in ("codec", "task"):
        if not isinstance(record.get(field), str):
            return f"{field!r} is not a string"
    if not isinstance(record.get("image"), (str, int)) or isinstance(record.get("image"), bool):
        return "'image' is not a string or an integer"
    if "prediction" not in record:
        return "no 'prediction'"
    if record["codec"] == REFERENCE_CODEC:
        return None
    return _coding_problem(record)


def _coding_problem(record: Dict[str, Any]) -> Optional[str]:
    """What is wrong with the coding fields (rate, fidelity, times) of a codec's record."""
    for field, low in (("bytes", 0), ("pixels", 1)):
        value = record.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= _MAX_COUNT:
            return f"{field!r} is {shorten(repr(value), 40)}, not an integer from {low} to 2^53"
    expected = 8.0 * record["bytes"] / record["pixels"]
    bpp = as_number(record.get("bpp"))
    if bpp is None or not math.isclose(bpp, expected, rel_tol=1e-9):
        return f"'bpp' is {record.get('bpp')!r}, not 8 * bytes / pixels = {expected!r}"
    likelihood = as_number(record.get("bpp_likelihood"))
    if likelihood is None or not (math.isnan(likelihood) or 0.0 <= likelihood < math.inf):
        return f"'bpp_likelihood' is {record.get('bpp_likelihood')!r}, not a finite rate or NaN"
    psnr = as_number(record.get("psnr"))
    if psnr is None or math.isnan(psnr):
        return f"'psnr' is {record.get('psnr')!r}, not a number of dB"
    ms_ssim = record.get("ms_ssim")
    similarity = as_number(ms_ssim)
    if ms_ssim is not None and (similarity is None or not -1.0 <= similarity <= MS_SSIM_MAX):
        return f"'ms_ssim' is {ms_ssim!r}, not a number in [-1, 1] or null"
    for field in ("encoding_time", "decoding_time"):  # optional: a record without them has no times
        seconds = record.get(field)
        value = as_number(seconds)
        if seconds is not None and (value is None or not (math.isnan(value) or 0.0 <= value < math.inf)):
            return f"{field!r} is {seconds!r}, not a number of seconds"
    quality = record.get("quality")
    if quality is not None and (not isinstance(quality, int) or isinstance(quality, bool)):
        return f"'quality' is {quality!r}, not an integer"
    return None


def _read_line(line: bytes) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """One line of a records file: the record, or ``None`` and what is wrong with it
    (cut short by an interrupted write, not JSON, not a valid record)."""
    if not line.endswith(b"\n"):
        return None, "incomplete last line (interrupted write)"
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as err:  # not JSON or UTF-8, nested too deep
        return None, f"not JSON ({shorten(str(err))})"
    problem = record_problem(record)
    return (record, None) if problem is None else (None, problem)


def stored_keys(path: Path) -> Set[RecordKey]:
    """The keys of the well-formed records of ``path`` (none when it is missing), read
    without taking the lock and without changing the file: damaged lines count as
    missing, and are left for :class:`RecordStore` to set aside. For what an evaluation
    has left to do before it starts."""
    keys: Set[RecordKey] = set()
    if not path.is_file():
        return keys
    with open(path, "rb") as f:
        for line in f:
            record, _ = _read_line(line)
            if record is not None:
                keys.add(RecordStore.key(record["codec"], record["task"], record["image"]))
    return keys


class RecordStore:
    """Append-only JSON-lines file of per-image results.

    Args:
        path: the ``.jsonl`` file (created with its directory when missing).
        prediction_problem: ``(task key, prediction) -> problem or None``: the tasks'
            own check of the predictions they stored (see
            :meth:`~compressai_transtic.tasks.base.Task.prediction_problem`); a
            record it finds wrong is set aside as damaged.

    Raises:
        RecordsLockedError: another evaluation holds the file.
    """

    def __init__(self, path: Path, prediction_problem: Optional[PredictionCheck] = None) -> None:
        self.path = Path(path)
        self._prediction_problem = prediction_problem
        self.damaged_path = self.path.with_name(self.path.name + ".damaged")
        self._index: Dict[RecordKey, Tuple[int, int]] = {}
        self._curves: Set[Tuple[str, str]] = set()
        self._writer: Optional[IO[bytes]] = None
        self._reader: Optional[IO[bytes]] = None
        self._lock: Optional[IO[str]] = None
        self._acquire_lock()
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def key(codec: str, task: str, image_id: Any) -> RecordKey:
        """The key of a record."""
        return (codec, task, str(image_id))

    # ------------------------------------------------------------------ lock
    def _acquire_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(self.path.with_name(self.path.name + ".lock"), "a+")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise RecordsLockedError(
                f"{self.path} is being written by another evaluation (process {holder}); wait for it to finish "
                f"or use another output folder"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        if not self.path.exists():
            return
        good: List[bytes] = []
        damaged: List[Tuple[int, bytes, str]] = []
        with open(self.path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    good.append(line)
                    continue
                problem = self._line_problem(line)
                if problem is None:
                    good.append(line)
                else:
                    damaged.append((lineno, line, problem))
        if damaged:
            self._set_aside(good, damaged)
        offset = 0
        for line in good:
            if line.strip():
                rec = json.loads(line)
                self._index[self.key(rec["codec"], rec["task"], rec["image"])] = (offset, len(line))
                self._note_curve(rec)
            offset += len(line)

    def _note_curve(self, record: Dict[str, Any]) -> None:
        label, task = record.get("label"), record.get("task_name")
        if record["codec"] != REFERENCE_CODEC and isinstance(label, str) and isinstance(task, str):
            self._curves.add((label, task))

    @property
    def curves(self) -> Set[Tuple[str, str]]:
        """``(curve label, task name)`` of the coded images' records held (the curves
        that can be made from them)."""
        return set(self._curves)

    def _line_problem(self, line: bytes) -> Optional[str]:
        record, problem = _read_line(line)
        if record is not None and self._prediction_problem is not None:
            problem = self._prediction_problem(record["task"], record["prediction"])
        return problem

    def _set_aside(self, good: List[bytes], damaged: List[Tuple[int, bytes, str]]) -> None:
        """Append damaged lines to the side file, then rewrite the records file with the good ones."""
        with open(self.damaged_path, "ab") as side:
            for _, line, _ in damaged:
                side.write(line if line.endswith(b"\n") else line + b"\n")
            side.flush()
            os.fsync(side.fileno())
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.writelines(good)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        for lineno, _, problem in damaged[:5]:
            logger.warning(
                "%s:%d: %s; the line is set aside in %s and its result will be recomputed",
                self.path,
                lineno,
                problem,
                self.damaged_path,
            )
        if len(damaged) > 5:
            logger.warning("%s: %d more damaged lines set aside in %s", self.path, len(damaged) - 5, self.damaged_path)

    def __contains__(self, key: RecordKey) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: RecordKey) -> Dict[str, Any]:
        """Read one record back from the file."""
        offset, length = self._index[key]
        if self._writer is not None:
            self._writer.flush()
        if self._reader is None:
            self._reader = open(self.path, "rb")
        self._reader.seek(offset)
        return json.loads(self._reader.read(length))

    def append(self, record: Dict[str, Any]) -> None:
        """Write one record durably (flush + fsync) and index it."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = open(self.path, "ab")
        offset = self._writer.seek(0, os.SEEK_END)
        self._writer.write(line)
        self._writer.flush()
        os.fsync(self._writer.fileno())
        self._index[self.key(record["codec"], record["task"], record["image"])] = (offset, len(line))
        self._note_curve(record)

    def move_to(self, folder: Path) -> bool:
        """Move the records (and damaged lines) into ``folder`` and start empty; keeps the lock.

        Returns:
            Whether there was anything to move.
        """
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            self._reader.close()
        self._writer = self._reader = None
        self._index.clear()
        self._curves.clear()
        moved = False
        for path in (self.path, self.damaged_path):
            if path.exists():
                folder.mkdir(parents=True, exist_ok=True)
                path.replace(folder / path.name)
                moved = True
        return moved

    def close(self) -> None:
        """Close the file handles and release the lock."""
        for f in (self._writer, self._reader, self._lock):
            if f is not None:
                f.close()
        self._writer = self._reader = self._lock = None

    def __enter__(self) -> "RecordStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
