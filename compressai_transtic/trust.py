"""Trust on first use for downloaded weights whose manifest row has no sha256.

The authors publish no hashes for the released files, so the manifest cannot verify
them. Instead, the first time a file of the cache is used (downloaded, or found
there) and loads as the weights it should hold, its sha256 is recorded in
``<torch hub dir>/checkpoints/compressai-transtic-sha256.json``;
later loads refuse a file whose content changed (a byte flipped on disk, a file
replaced by another). A user who knows the right hash can pin it (it then counts as
a manifest hash), and a user who replaced a file on purpose can forget its record::

    compressai-transtic models --pin base_codec_1.pth.tar <sha256>
    compressai-transtic models --forget base_codec_1.pth.tar

The store is small JSON, written atomically. A damaged store is an error that names
it (never silently trusted or overwritten).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from .fileio import atomic_write_text
from .jsonvalues import is_integer
from .strenum import StrEnum

__all__ = ["HashRecord", "HashSource", "TrustStore", "TrustStoreError", "STORE_NAME"]

logger = logging.getLogger(__name__)

STORE_NAME = "compressai-transtic-sha256.json"
_HEX = re.compile(r"^[0-9a-f]{64}$")


class HashSource(StrEnum):
    """Where a recorded hash comes from."""

    #: the file itself, the first time it was used (trust on first use)
    FIRST_USE = "first-use"
    #: pinned by the user (``compressai-transtic weights --pin``)
    USER = "user"


def _is_record(entry: Any) -> bool:
    """A record as :meth:`TrustStore.record` writes it: a sha256, and a size if any."""
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not _HEX.fullmatch(entry["sha256"]):
        return False
    if not all(isinstance(entry.get(key, ""), str) for key in ("source", "url", "since")):
        return False
    if entry.get("source", HashSource.FIRST_USE) not in HashSource.values():
        return False
    size = entry.get("size")
    return size is None or (is_integer(size) and size >= 0)


class TrustStoreError(ValueError):
    """The store of recorded hashes cannot be read or a hash is malformed."""


@dataclass(frozen=True)
class HashRecord:
    """The hash a cached file must have.

    Args:
        sha256: hex digest.
        source: a :class:`HashSource` (or its value).
        url: where the file came from.
        since: UTC time of the record (ISO 8601).
        size: the file's size in bytes (records of first use; ``None`` in older stores
            and for pinned hashes): a file of another size is refused without hashing it.
    """

    sha256: str
    source: HashSource
    url: str = ""
    since: str = ""
    size: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", HashSource(self.source))


class TrustStore:
    """Recorded hashes of the files of one cache folder.

    Args:
        folder: the cache folder (``<torch hub dir>/checkpoints``).
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / STORE_NAME

    def _read(self) -> Dict[str, Dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except RecursionError:
            raise TrustStoreError(
                f"{self.path} (recorded sha256 of downloaded weights) is nested too deeply to be a store of "
                "records; delete it to record the hashes of the cached files again"
            ) from None
        except (OSError, ValueError) as exc:
            raise TrustStoreError(
                f"{self.path} (recorded sha256 of downloaded weights) cannot be read ({exc}); "
                "delete it to record the hashes of the cached files again"
            ) from exc
        files = doc.get("files") if isinstance(doc, dict) else None
        if not isinstance(files, dict) or not all(_is_record(v) for v in files.values()):
            raise TrustStoreError(
                f"{self.path} is not a store of sha256 records; delete it to record the hashes "
                "of the cached files again"
            )
        return files

    def _write(self, files: Dict[str, Dict[str, Any]]) -> None:
        atomic_write_text(self.path, json.dumps({"format_version": 1, "files": files}, indent=1, sort_keys=True) + "\n")

    def records(self) -> Dict[str, HashRecord]:
        """Every file's record (one read of the store)."""
        return {
            name: HashRecord(
                e["sha256"], e.get("source", HashSource.FIRST_USE), e.get("url", ""), e.get("since", ""), e.get("size")
            )
            for name, e in self._read().items()
        }

    def get(self, filename: str) -> Optional[HashRecord]:
        """The record of a file, or ``None``."""
        return self.records().get(filename)

    def record(
        self,
        filename: str,
        sha256: str,
        url: str = "",
        source: HashSource = HashSource.FIRST_USE,
        size: Optional[int] = None,
    ) -> HashRecord:
        """Record (or pin, ``source=HashSource.USER``) the hash of a file (and its ``size``, when known).

        Raises:
            TrustStoreError: ``sha256`` is not 64 hex digits, or the store is damaged.
        """
        sha256 = sha256.strip().lower()
        if not _HEX.fullmatch(sha256):
            raise TrustStoreError(f"{sha256!r} is not a sha256 (64 hex digits)")
        files = self._read()
        entry: Dict[str, Any] = {
            "sha256": sha256,
            "source": HashSource(source).value,
            "url": url,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if size is not None:
            entry["size"] = size
        files[filename] = entry
        self._write(files)
        return HashRecord(**entry)

    def forget(self, filename: str) -> bool:
        """Remove the record of a file; whether there was one."""
        files = self._read()
        if filename not in files:
            return False
        del files[filename]
        self._write(files)
        return True
