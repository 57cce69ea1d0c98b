"""Per-image evaluation records (JSON lines) that make evaluations resumable.

Every finished (rate point, task, image) is appended as one JSON line, flushed and
fsync'ed before the next image starts. A restarted evaluation reads the file and skips
what it holds. A line cut short by a crash is removed when the file is opened again.
Only an index (key -> position in the file) is kept in memory: a full COCO run holds
millions of detections, which are read back one rate point at a time.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any, Dict, Optional, Tuple

__all__ = ["RecordKey", "RecordStore"]

logger = logging.getLogger(__name__)

#: (codec key, task key, image id as text)
RecordKey = Tuple[str, str, str]


class RecordStore:
    """Append-only JSON-lines file of per-image results.

    Args:
        path: the ``.jsonl`` file (created with its directory when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._index: Dict[RecordKey, Tuple[int, int]] = {}
        self._writer: Optional[IO[bytes]] = None
        self._reader: Optional[IO[bytes]] = None
        self._load()

    @staticmethod
    def key(codec: str, task: str, image_id: Any) -> RecordKey:
        """The key of a record."""
        return (codec, task, str(image_id))

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "r+b") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    # find the last complete line and drop the partial one
                    f.seek(0)
                    data = f.read()
                    end = data.rfind(b"\n") + 1
                    logger.warning("%s: removing an incomplete last line (interrupted write)", self.path)
                    f.truncate(end)
                    f.flush()
                    os.fsync(f.fileno())
            f.seek(0)
            offset = 0
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rec = json.loads(line)
                        key = self.key(rec["codec"], rec["task"], rec["image"])
                    except (ValueError, KeyError, TypeError) as err:
                        raise ValueError(
                            f"{self.path}:{lineno} is not an evaluation record ({err}); move the file "
                            f"away to start the evaluation afresh"
                        ) from err
                    self._index[key] = (offset, len(line))
                offset += len(line)

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

    def close(self) -> None:
        """Close the file handles."""
        for f in (self._writer, self._reader):
            if f is not None:
                f.close()
        self._writer = self._reader = None

    def __enter__(self) -> "RecordStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
