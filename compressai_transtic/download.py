"""Downloads into the torch hub cache, verified: the files of the zoo and checkpoint URLs.

A leaf module (no model imports): :mod:`compressai_transtic.zoo` and the checkpoint
loader use it. A file is ``<torch.hub.get_dir()>/checkpoints/<name>``; a download goes
to a temporary name and is renamed only once complete and verified, against the
manifest's sha256 or, without one, the hash recorded at the file's first use
(:mod:`compressai_transtic.trust`). Offline, :class:`WeightsUnavailableError` names
the URL and the exact path to put the file at.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch.hub

from .trust import HashRecord, HashSource, TrustStore

logger = logging.getLogger(__name__)

__all__ = [
    "ChecksumMismatchError",
    "FileToFetch",
    "WeightsToFetchError",
    "WeightsUnavailableError",
    "fetch_url",
    "sha256_of",
]


@dataclass(frozen=True)
class FileToFetch:
    """A weights file that is neither cached nor downloadable, as a user fetches it.

    Args:
        what: what the file holds, for humans (``tic q1``, ``ResNet50``).
        url: where it is published.
        path: where to put it, or ``None`` where only an explicit path can serve
            (a task network's ``--task-weights PATH``).
        reason: why the download failed.
    """

    what: str
    url: str
    path: Optional[Path]
    reason: str = ""

    def __str__(self) -> str:
        where = self.path if self.path is not None else "any path, then give that path as the task weights"
        return f"{self.what}: {self.url} -> {where}"


class WeightsToFetchError(RuntimeError):
    """Every weights file that a command needs and that is neither cached nor
    downloadable, named in one message (URL -> path), so one visit to a machine with
    network access fetches them all.

    Args:
        files: the files, in the order the command reads them.
    """

    def __init__(self, files: Sequence[FileToFetch]) -> None:
        self.files = tuple(files)
        lines = "\n".join(f"  {f}" for f in self.files)
        reasons = "; ".join(dict.fromkeys(f.reason for f in self.files if f.reason))
        super().__init__(
            f"{len(self.files)} weights file(s) are neither cached nor downloadable; download each on a machine "
            f"with network access and put it at its path (URL -> path; the torch hub cache is "
            f"$TORCH_HOME/hub/checkpoints):\n{lines}" + (f"\n(the downloads failed: {reasons})" if reasons else "")
        )


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither in the cache nor downloadable.

    Args:
        url: where the weights are published.
        path: where the file is expected (the torch hub cache).
        reason: why the download failed.
    """

    def __init__(self, url: str, path: Path, reason: str = "") -> None:
        self.url = url
        self.path = Path(path)
        self.reason = reason
        because = f" ({reason})" if reason else ""
        super().__init__(
            f"pretrained weights {self.path.name} are not in the cache and could not be "
            f"downloaded from {url}{because}. Download that file on a machine with network "
            f"access and put it at {self.path} (the torch hub cache: $TORCH_HOME/hub/checkpoints)."
        )

    def to_fetch(self, what: Optional[str] = None) -> FileToFetch:
        """This file as one entry of a :class:`WeightsToFetchError` (``what``: what it
        holds, by default its name)."""
        return FileToFetch(what or self.path.name, self.url, self.path, self.reason)


class ChecksumMismatchError(RuntimeError):
    """A weights file does not have the sha256 recorded for it (manifest, pinned or first use).

    Args:
        path: the file checked.
        expected: the recorded sha256.
        actual: sha256 of the file.
        url: where the file comes from.
        record: the trust store's record, when the hash comes from there (not the manifest).
        store: the trust store's file.
        size: the file's size, when it was refused for differing from the recorded size
            (``actual`` is then empty: the file was not hashed).
    """

    def __init__(
        self,
        path: Path,
        expected: str,
        actual: str,
        url: str = "",
        record: Optional[HashRecord] = None,
        store: Optional[Path] = None,
        size: Optional[int] = None,
    ) -> None:
        self.path = Path(path)
        self.expected = expected
        self.actual = actual
        origin = f" (from {url})" if url else ""
        if record is None:
            message = (
                f"{self.path}{origin} has sha256 {actual}, but the manifest expects {expected}. "
                "The file is corrupted or not the released one: delete it and load again to "
                "download a fresh copy."
            )
        else:
            when = "you pinned" if record.source is HashSource.USER else f"it had when first used ({record.since})"
            found = f"sha256 {actual}, not the {expected}" if size is None else f"{size} bytes, not the {record.size}"
            message = (
                f"{self.path}{origin} has {found} {when}, recorded in {store}. "
                "The file changed: delete it and load again to download a fresh copy, or, if you "
                f"replaced it on purpose, run `compressai-transtic models --forget {self.path.name}`."
            )
        super().__init__(message)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: reads a file as the caller needs it and raises if it cannot (see :func:`fetch_url`)
FileCheck = Callable[[Path], object]


def _verify(path: Path, filename: str, sha256: str, url: str, check: Optional[FileCheck]) -> None:
    """Check ``path`` (the cache file ``filename``, or its download) against the
    manifest's sha256, else against the trust store's record of it, else run ``check``
    and record its hash (trust on first use): a file that cannot be read is never
    recorded, so once deleted a good copy is accepted."""
    shown = path.parent / filename  # a download's temporary name means nothing to the user
    if sha256:
        actual = sha256_of(path)
        if actual != sha256:
            raise ChecksumMismatchError(shown, sha256, actual, url)
        return
    store = TrustStore(path.parent)
    record = store.get(filename)
    if record is not None:
        size = path.stat().st_size
        if record.size is not None and size != record.size:  # refused at once, however large the file
            raise ChecksumMismatchError(shown, record.sha256, "", url, record=record, store=store.path, size=size)
        actual = sha256_of(path)
        if record.sha256 != actual:
            raise ChecksumMismatchError(shown, record.sha256, actual, url, record=record, store=store.path)
        return
    if check is not None:
        check(path)
    actual = sha256_of(path)
    try:
        store.record(filename, actual, url, size=path.stat().st_size)
        logger.info(
            "recorded sha256 %s of %s in %s (trust on first use: a changed file will be refused)",
            actual,
            filename,
            store.path,
        )
    except OSError as exc:  # a read-only shared cache: the file is used, unrecorded
        logger.warning("cannot record the sha256 of %s (%s): it is not verified", filename, exc)


def fetch_url(
    url: str,
    filename: Optional[str] = None,
    sha256: str = "",
    progress: bool = True,
    check: Optional[FileCheck] = None,
) -> Path:
    """Return the cached copy of ``url``, downloading it into the torch hub cache if needed.

    The file is ``<torch.hub.get_dir()>/checkpoints/<filename>``. A download
    goes to a temporary name in that folder and is renamed only once complete
    and verified, so no partial file is left behind. Without ``sha256``, the file is
    checked against the hash recorded when it was first used (:mod:`.trust`), and that
    hash is recorded on first use.

    Args:
        url: file URL.
        filename: cache file name (default: the URL's basename).
        sha256: expected hex digest; empty: trust on first use.
        progress: show a progress bar on stderr while downloading.
        check: reads the file as the caller will (e.g. loads the weights) and raises
            if it cannot; run before a hash is recorded at first use, so that a damaged
            file is refused (and a download of one not kept) without being trusted.

    Raises:
        WeightsUnavailableError: not cached and the download failed (offline ...).
        ChecksumMismatchError: the cached or downloaded file has another sha256.
        TrustStoreError: the store of recorded hashes is damaged.
    """
    filename = filename or url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if path.is_file():
        logger.debug("using cached %s", path)
        _verify(path, filename, sha256, url, check)
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsUnavailableError(url, path, f"cannot create {path.parent}: {exc}") from exc
    if not _is_fetchable_url(url):
        raise WeightsUnavailableError(url, path, "not an http(s) or file: URL")
    tmp = path.with_name(f".{filename}.{uuid.uuid4().hex}.download")
    logger.info("downloading %s to %s", url, path)
    try:
        _download(url, tmp, progress)
        try:
            _verify(tmp, filename, sha256, url, check)
        except ValueError as exc:  # the check refused what was downloaded (not kept): named as the cache file
            reason = str(exc).replace(str(tmp), str(path))
            raise WeightsUnavailableError(url, path, f"the downloaded file is not usable: {reason}") from exc
        os.replace(tmp, path)
    except OSError as exc:
        raise WeightsUnavailableError(url, path, f"{type(exc).__name__}: {exc}") from exc
    finally:
        for leftover in [tmp, *tmp.parent.glob(f"{tmp.name}.*.partial")]:  # torch.hub's own temporary file
            leftover.unlink(missing_ok=True)
    return path


def _is_fetchable_url(url: str) -> bool:
    """An http(s) URL with a host, or a ``file:`` URL (a local mirror)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return (parts.scheme in ("http", "https") and bool(host)) or (parts.scheme == "file" and bool(parts.path))


def _download(url: str, tmp: Path, progress: bool) -> None:
    """``url`` to ``tmp``; what goes wrong is an ``OSError`` (offline, HTTP errors, a URL
    that ``urllib`` cannot request)."""
    try:
        torch.hub.download_url_to_file(url, str(tmp), hash_prefix=None, progress=progress)
    except (http.client.HTTPException, ValueError) as exc:  # ValueError: e.g. an invalid IPv6 host
        raise OSError(f"{type(exc).__name__}: {exc}") from exc
