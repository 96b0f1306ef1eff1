"""Which dataset a set of files is: official checksums, folder names and a content check (MNIST vs Fashion).

MNIST and Fashion-MNIST use the same four file names, so a name alone proves nothing: a set of files serves
as ``mnist`` or ``fashion_mnist`` only if either

1. every file holds the dataset's official content: the file's SHA-256 (and MD5) is the one listed in
   :data:`OFFICIAL_CHECKSUMS` for a distributed ``.gz`` file, or the SHA-256 of its decompressed IDX
   payload (the file itself when not compressed) is the one listed for the uncompressed file. A payload
   digest is the same however the file was (re)compressed: Debian's ``dataset-fashion-mnist`` ships the
   original images and labels in recompressed ``.gz`` files, whose own digests differ; or
2. the folder names the dataset (the folder holding the files or its parent: a name containing ``fashion``
   for Fashion-MNIST; containing ``mnist`` and none of ``fashion``, ``emnist``, ``kmnist``, ``qmnist`` for
   MNIST; e.g. ``fashion_mnist``, ``FashionMNIST/raw``, ``mnist-10k``, ``MNIST/raw``) **and** the content
   agrees (:func:`idx_content_kind`). This admits subsets (such as the shared 10 000-image MNIST subset).

Refused outright: a file whose checksum or payload digest is the official one of the *other* dataset, and a
file that holds as many images (or labels) as the original release's (:data:`RELEASE_SIZES`) but not its
content — a damaged or altered copy, not a subset. CIFAR batches are compared with the official MD5s too
(their file names already differ between CIFAR-10 and CIFAR-100).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

OFFICIAL_CHECKSUMS: dict[str, dict[str, tuple[str | None, str | None]]] = {
    "mnist": {
        # .gz as distributed: MD5 from torchvision.datasets.MNIST.resources, SHA-256 as listed by several
        # independent downloaders (TensorFlow's mirror lists, guild.ai, ...).
        "train-images-idx3-ubyte.gz": (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        "train-labels-idx1-ubyte.gz": (
            "d53e105ee54ea40749a09fcbcd1e9432",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "9fb629c4189551a2d022fa330f9573f3",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "ec29112dd5afa0611ce80d1b7f02629c",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
        # the same files uncompressed (SHA-256 only; no MD5 is published for them)
        "train-images-idx3-ubyte": (None, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte": (None, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte": (None, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte": (None, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    "fashion_mnist": {
        # .gz as distributed: MD5 from the Fashion-MNIST README / torchvision.datasets.FashionMNIST, SHA-256
        # as listed by independent downloaders.
        "train-images-idx3-ubyte.gz": (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        "train-labels-idx1-ubyte.gz": (
            "25c81989df183df01b3e8a0aad5dffbe",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "bef4ecab320f06d8554ea6380940ec79",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "bb300cfdad3c16e7a12a480ee83cd310",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
        # The payload digests of the original release: the four uncompressed IDX files (the images and labels).
        # MD5 as public lists give it for the files the distributed .gz hold (checked against them); SHA-256
        # computed from the decompressed files of Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1
        # (recompressed .gz whose decompressed MD5s are those published ones), so it identifies the release's
        # content however it is compressed.
        "train-images-idx3-ubyte": (
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        "train-labels-idx1-ubyte": (
            "9018921c3c673c538a1fc5bad174d6f9",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        "t10k-images-idx3-ubyte": (
            "8181f5470baa50b63fa0f6fddb340f0a",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        "t10k-labels-idx1-ubyte": (
            "15d484375f8d13e6eb1aabb0c3f46965",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
    "cifar10": {
        # extracted batches and the archive: MD5 from torchvision.datasets.CIFAR10
        "data_batch_1": ("c99cafc152244af753f735de768cd75f", None),
        "data_batch_2": ("d4bba439e000b95fd0a9bffe97cbabec", None),
        "data_batch_3": ("54ebc095f3ab1f0389bbae665268c751", None),
        "data_batch_4": ("634d18415352ddfa80567beed471001a", None),
        "data_batch_5": ("482c414d41f54cd18b22e5b47cb7c3cb", None),
        "test_batch": ("40351d587109b95175f43aff81a1287e", None),
        "cifar-10-python.tar.gz": (
            "c58f30108f718f92721af3b95e74349a",
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        ),
    },
    "cifar100": {
        # MD5 from torchvision.datasets.CIFAR100
        "train": ("16019d7e3df5f24257cddd939b257f8d", None),
        "test": ("f0ef6b0ae62326f3e7ffdfab6717acfc", None),
        "cifar-100-python.tar.gz": (
            "eb9058c3a382ffc7106e4002c42a8d85",
            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        ),
    },
}
"""Official checksums ``{dataset: {file name: (MD5 or None, SHA-256 or None)}}`` of the distributed files and,
for MNIST and Fashion-MNIST, of their uncompressed IDX files (the payloads). Only values found in public sources
or computed from a copy whose published digests match are listed; ``None`` where none is recorded."""

RELEASE_SIZES: dict[str, tuple[int, int]] = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000)}
"""Images (and labels) in the train and test files of each original release (LeCun et al.; Xiao et al. 2017)."""

DIGIT_BOX = 20  # MNIST digits were size-normalised into a 20×20 box inside the 28×28 image


class DatasetIdentityError(ValueError):
    """Files found under a dataset's names are not (shown to be) that dataset; the message names the fix."""


def file_digests(path: Path) -> tuple[str, str]:
    """(MD5, SHA-256) of the file's bytes as stored."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def official_owner(filename: str, digests: tuple[str | None, str]) -> str | None:
    """The dataset whose official file named ``filename`` has these (MD5 or None, SHA-256) digests, or None."""
    for dataset, files in OFFICIAL_CHECKSUMS.items():
        md5, sha = files.get(filename, (None, None))
        if (sha is not None and sha == digests[1]) or (sha is None and md5 is not None and md5 == digests[0]):
            return dataset
    return None


def folder_names(directory: Path, name: str) -> bool:
    """Whether the folder holding the files, or its parent, names ``name`` (``mnist`` or ``fashion_mnist``)."""
    parts = ["".join(c for c in part.lower() if c.isalnum()) for part in directory.absolute().parts[-2:]]
    if name == "fashion_mnist":
        return any("fashion" in part for part in parts)
    others = ("fashion", "emnist", "kmnist", "qmnist")
    return any("mnist" in part for part in parts) and not any(o in part for part in parts for o in others)


def idx_content_kind(images: np.ndarray) -> tuple[str, float]:
    """Tell MNIST digits from Fashion-MNIST clothing by the extent of each image's non-zero pixels.

    MNIST digits were size-normalised to fit a 20×20 box, then centred by their centre of mass in the 28×28
    image; Fashion-MNIST products were trimmed and resized so that their longest edge is 28 pixels. So with
    ``h_i``, ``w_i`` the height and width of the bounding box of image i's non-zero pixels,

        f = (1/N) · #{i : max(h_i, w_i) ≤ 20}

    is 1 for MNIST (10 000 of the 10 000 images of the shared MNIST subset) and near 0 for Fashion-MNIST.

    Args:
        images: uint8 ``[N, H, W]``.

    Returns:
        ``(kind, f)``: kind ``"digits"`` when ``f ≥ 0.5``, ``"clothing"`` when ``f < 0.5``, ``"neither"``
        (with ``f`` NaN) for images that are not 28×28 or an empty split.
    """
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.shape[0] == 0:
        return "neither", float("nan")
    ink = images > 0
    extents = []
    for axis in (2, 1):  # rows that hold ink (height), columns that hold ink (width)
        lines = ink.any(axis=axis)
        first = lines.argmax(axis=1)
        last = lines.shape[1] - 1 - lines[:, ::-1].argmax(axis=1)
        extents.append(np.where(lines.any(axis=1), last - first + 1, 0))
    fraction = float(np.mean(np.maximum(*extents) <= DIGIT_BOX))
    return ("digits" if fraction >= 0.5 else "clothing"), fraction


KIND = {"mnist": "digits", "fashion_mnist": "clothing"}


def _payload_name(path: Path) -> str:
    """The name of the uncompressed file: ``train-images-idx3-ubyte`` for ``train-images-idx3-ubyte.gz``."""
    return path.name[:-3] if path.name.endswith(".gz") else path.name


def idx_identity(
    name: str,
    titles: Mapping[str, str],
    paths: Sequence[Path],
    arrays: Sequence[np.ndarray],
    payloads: Sequence[str],
) -> tuple[str | None, str]:
    """``(identity, "")`` when the files are ``name``; ``(None, why not)`` otherwise (see the module docstring).

    Args:
        name: ``mnist`` or ``fashion_mnist``.
        titles: dataset name -> title used in messages.
        paths: the four files (train images, train labels, test images, test labels).
        arrays: their contents.
        payloads: SHA-256 of each file's decompressed content (hex).
    """
    title = titles[name]
    stored = [official_owner(p.name, file_digests(p)) for p in paths]
    held = [official_owner(_payload_name(p), (None, sha)) for p, sha in zip(paths, payloads, strict=True)]
    for path, by_file, by_payload in zip(paths, stored, held, strict=True):
        if by_file is not None and by_file != name:
            return None, f"{path.name} is the official {titles[by_file]} file (checksum), not {title}"
        if by_payload is not None and by_payload != name:
            return None, (
                f"{path.name} holds the official {titles[by_payload]} {_payload_name(path)} "
                f"(SHA-256 of its decompressed payload), not {title}"
            )
    if all(owner == name for owner in stored):
        return f"official {title} files (SHA-256 of all four files checked)", ""
    if all(name in pair for pair in zip(stored, held, strict=True)):
        return (
            f"official {title} images and labels (SHA-256 of all four decompressed IDX payloads checked; "
            "the files as stored differ from the distributed ones, e.g. recompressed)"
        ), ""
    altered = _altered_release_file(name, title, paths, arrays, payloads, held)
    if altered:
        return None, altered
    directory = paths[0].parent
    kinds = [idx_content_kind(arrays[i]) for i in (0, 2)]
    content = ", ".join(
        f"{split}: {kind}, {f:.1%} of images fit a 20×20 box"
        for split, (kind, f) in zip(("train", "test"), kinds, strict=True)
    )
    if any(kind != KIND[name] for kind, _ in kinds):
        looks = {
            "digits": "they look like MNIST digits",
            "clothing": "they look like Fashion-MNIST clothing",
            "neither": "they are not 28×28 images as both datasets' are",
        }
        seen = " and ".join(sorted({looks[k] for k, _ in kinds if k != KIND[name]}))
        return None, f"its images are not {title}'s ({content}; {seen})"
    if not folder_names(directory, name):
        word = "fashion" if name == "fashion_mnist" else "mnist"
        return None, f"the files are not the official ones and the folder name does not say {word!r}"
    return f"folder name {directory.name!r} and content ({content}); not the official files", ""


def _altered_release_file(
    name: str,
    title: str,
    paths: Sequence[Path],
    arrays: Sequence[np.ndarray],
    payloads: Sequence[str],
    held: Sequence[str | None],
) -> str:
    """Why one of the files is a damaged or altered copy of the release, or "" when none is: it holds as many
    images (labels) as the release's file but its payload digest is not the official one."""
    sizes = RELEASE_SIZES.get(name)
    if sizes is None:
        return ""
    for i, (path, array, sha, owner) in enumerate(zip(paths, arrays, payloads, held, strict=True)):
        official = OFFICIAL_CHECKSUMS.get(name, {}).get(_payload_name(path), (None, None))[1]
        if owner == name or official is None or array.shape[0] != sizes[i // 2]:
            continue
        what = "images" if i % 2 == 0 else "labels"
        return (
            f"{path.name} holds {array.shape[0]} {what} like the original {title} release but not its content "
            f"(SHA-256 of the decompressed payload {sha[:16]}…, the original's {official[:16]}…): a damaged or "
            "altered copy; restore the original file"
        )
    return ""
