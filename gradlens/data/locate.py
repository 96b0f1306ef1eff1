"""Where a dataset's files are looked for: the data folders, the candidate folders under each, complete sets.

The data folders, in order (:func:`data_dirs`): the ones named by ``data_dir`` (a path, a string of paths
separated by ``os.pathsep`` — ``:`` on POSIX — as ``$PATH`` is, or a sequence of paths), else those of
``$GRADLENS_DATA`` (the same string form), else :func:`default_data_dir`; then the folders where the
operating system installs datasets (:data:`INSTALLED_DATA_DIRS`). Under each data folder the candidates are
the folder itself, ``<folder>/<name>`` and the dataset's usual folder names (e.g. ``MNIST/raw`` as
torchvision lays it out, ``fashion-mnist`` as Debian does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

DataDir = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
"""What ``data_dir=`` (the CLI's ``--data-dir``) takes: one folder, os.pathsep-separated folders, a sequence."""

INSTALLED_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
"""Where operating-system packages install datasets, searched after the user's folders: Debian's
``dataset-fashion-mnist`` puts the real Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``."""


def _folders(value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The folders named by ``value``: a string is split at ``os.pathsep``; empty parts and repeats dropped."""
    if isinstance(value, str):
        parts: list[str] = value.split(os.pathsep)
    elif isinstance(value, os.PathLike):
        parts = [os.fspath(value)]
    else:
        parts = [os.fspath(v) for v in value]
    folders: list[Path] = []
    for part in parts:
        folder = Path(part).expanduser() if part else None
        if folder is not None and folder not in folders:
            folders.append(folder)
    return folders


def default_data_dir() -> Path:
    """The first folder of ``$GRADLENS_DATA`` if set, else ``$XDG_CACHE_HOME/gradlens/data``
    (``~/.cache/gradlens/data``): where ``download=True`` puts files when no ``data_dir`` is given."""
    named = _folders(os.environ.get("GRADLENS_DATA", ""))
    if named:
        return named[0]
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "gradlens" / "data"


def data_dirs(data_dir: DataDir = None) -> list[Path]:
    """The data folders searched, in order: those of ``data_dir`` (else of ``$GRADLENS_DATA``, else
    :func:`default_data_dir`), then :data:`INSTALLED_DATA_DIRS`.

    Raises:
        ValueError: ``data_dir`` is given but names no folder (an empty string or sequence).
    """
    if data_dir is None:
        users = _folders(os.environ.get("GRADLENS_DATA", "")) or [default_data_dir()]
    else:
        users = _folders(data_dir)
        if not users:
            raise ValueError(
                f"data_dir={data_dir!r} names no folder; pass a folder, several separated by {os.pathsep!r} "
                "or as a list, or None for $GRADLENS_DATA"
            )
    return users + [d for d in INSTALLED_DATA_DIRS if d not in users]


def candidates(roots: Sequence[Path], name: str, subdirs: Sequence[str]) -> list[Path]:
    """The folders tried for dataset ``name``, in order: per root, the root, ``root/name``, ``root/<subdir>``."""
    dirs: list[Path] = []
    for root in roots:
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


def install_hint(package: str) -> str:
    """How to install the operating-system package ``package`` ("" when there is none)."""
    return f"install Debian's package {package} (apt-get install {package})" if package else ""


def complete_sets(
    name: str,
    root: Path,
    dirs: Sequence[Path],
    files: Sequence[str],
    allow_gz: bool,
    can_download: bool,
    package: str = "",
) -> Iterator[list[Path]]:
    """The files' paths in each directory of ``dirs`` that holds all of them, in order.

    Raises ``FileNotFoundError`` (on the first ``next``) when none does, naming every folder looked in, what
    each partial folder lacks, and the fix: ``root`` is where to put the files, ``package`` the
    operating-system package that installs the dataset, if any.
    """
    partial, complete = [], False
    for d in dirs:
        found = [existing(d, f, allow_gz) for f in files]
        if all(p is not None for p in found):
            complete = True
            yield [p for p in found if p is not None]
        elif any(p is not None for p in found):
            missing = [f for f, p in zip(files, found, strict=True) if p is None]
            partial.append(f"{d} lacks {', '.join(missing)}")
    if complete:
        return
    suffix = " (each raw or .gz)" if allow_gz else ""
    where = f"; {'; '.join(partial)}" if partial else ""
    hint = "; or pass download=True where there is a network" if can_download else ""
    install = f"; or {install_hint(package)}" if package else ""
    raise FileNotFoundError(
        f"{name}: no directory holds {', '.join(files)}{suffix}; "
        f"looked in {', '.join(map(str, dirs))}{where}; "
        f"put the files in {root} or pass data_dir= (CLI: --data-dir) or set $GRADLENS_DATA{hint}{install}"
    )
