"""Where a dataset's files are looked for: the data root, the candidate folders under it, complete sets."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path


def default_data_dir() -> Path:
    """``$GRADLENS_DATA`` if set, else ``$XDG_CACHE_HOME/gradlens/data`` (``~/.cache/gradlens/data``)."""
    env = os.environ.get("GRADLENS_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "gradlens" / "data"


def root(data_dir: str | os.PathLike[str] | None) -> Path:
    """The data root: ``data_dir`` if given, else :func:`default_data_dir`."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def candidates(root: Path, name: str, subdirs: Sequence[str]) -> list[Path]:
    """The folders tried for dataset ``name``, in order: ``root``, ``root/name``, ``root/<each subdir>``."""
    dirs: list[Path] = []
    for sub in ("", name, *subdirs):
        d = root / sub if sub else root
        if d not in dirs:
            dirs.append(d)
    return dirs


def existing(directory: Path, filename: str, allow_gz: bool) -> Path | None:
    """``directory/filename`` (or its ``.gz`` twin when ``allow_gz``) if it is a file, else None."""
    for candidate in (filename, f"{filename}.gz") if allow_gz else (filename,):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def find_files(
    name: str, root: Path, dirs: Sequence[Path], files: Sequence[str], allow_gz: bool, can_download: bool
) -> list[Path]:
    """The files' paths in the first directory of ``dirs`` that holds all of them."""
    partial = []
    for d in dirs:
        found = [existing(d, f, allow_gz) for f in files]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
        if any(p is not None for p in found):
            missing = [f for f, p in zip(files, found, strict=True) if p is None]
            partial.append(f"{d} lacks {', '.join(missing)}")
    suffix = " (each raw or .gz)" if allow_gz else ""
    where = f"; {'; '.join(partial)}" if partial else ""
    hint = "; or pass download=True where there is a network" if can_download else ""
    raise FileNotFoundError(
        f"{name}: no directory holds {', '.join(files)}{suffix}; "
        f"looked in {', '.join(map(str, dirs))}{where}; "
        f"put the files in {root} or pass data_dir= (CLI: --data-dir) or set $GRADLENS_DATA{hint}"
    )


def all_complete(
    name: str, root: Path, dirs: Sequence[Path], files: Sequence[str], allow_gz: bool, can_download: bool
) -> Iterator[list[Path]]:
    """The files' paths in each directory of ``dirs`` that holds all of them, in order; raises like
    :func:`find_files` when none does."""
    first = find_files(name, root, dirs, files, allow_gz, can_download)
    yield first
    after = list(dirs)[list(dirs).index(first[0].parent) + 1 :]
    for d in after:
        found = [existing(d, f, allow_gz) for f in files]
        if all(p is not None for p in found):
            yield [p for p in found if p is not None]
