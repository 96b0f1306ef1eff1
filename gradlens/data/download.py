"""Fetching a dataset file from its official address, checked by SHA-256 before it is kept."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Remote:
    """One downloadable file: where it comes from and its SHA-256."""

    url: str
    sha256: str


def fetch(remote: Remote, dest: Path, timeout: float = 30.0) -> Path:
    """Fetch ``remote.url`` to ``dest`` and check its SHA-256; nothing is left at ``dest`` on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(remote.url, timeout=timeout) as response, part.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(
            f"could not download {remote.url} ({reason}); no network? Copy {dest.name} "
            f"(SHA-256 {remote.sha256}) into {dest.parent} by hand or pass data_dir= (CLI: --data-dir)"
        ) from exc
    if digest.hexdigest() != remote.sha256:
        part.unlink(missing_ok=True)
        raise ValueError(
            f"{remote.url}: SHA-256 mismatch: expected {remote.sha256}, got {digest.hexdigest()}; "
            "the download was discarded, try again or fetch the file by hand"
        )
    part.replace(dest)
    return dest
