"""Datasets that work offline: embedded 8×8 digits, MNIST-family IDX files and CIFAR python pickles.

``load_dataset(name, data_dir=None)`` returns a :class:`Dataset` of float image tensors ``[N, C, H, W]``
scaled to [0, 1] (or ``[N, C·H·W]`` with ``flatten=True``) and int64 labels ``[N]`` in ``0..K-1``.

Known names (``list_datasets()``):

- ``digits``: scikit-learn's bundled 8×8 handwritten digits (1797 images, 17 grey levels 0..16, divided by
  16). Embedded in scikit-learn, so it needs no files and no network; ``data_dir`` is ignored. Fixed split:
  a permutation drawn from a local ``torch.Generator`` seeded with :data:`DIGITS_SPLIT_SEED`; its first 1437
  indices are the training set, the last 360 the test set (about 80/20, not stratified).
- ``mnist``, ``fashion_mnist``: the four IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``). Pixels divided by 255.
- ``emnist_<split>`` for split in balanced, byclass, bymerge, digits, letters, mnist: the files
  ``emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte`` of NIST's ``gzip.zip``. EMNIST stores each
  image transposed (column-major); the loader transposes it back so that images look like MNIST's.
  ``emnist_letters`` labels are 1..26 in the files (a..z, case merged) and are shifted to 0..25.
- ``cifar10``: ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` and ``test_batch``;
  ``cifar100``: ``cifar-100-python/train`` and ``test`` with the 100 *fine* labels. Images ``[N, 3, 32, 32]``
  divided by 255. The pickles are read with an unpickler that only admits numpy arrays, so a foreign pickle
  cannot run code.

Where files are looked for: the root is ``data_dir`` if given, else ``$GRADLENS_DATA``, else
:func:`default_data_dir`; ``download=True`` puts missing files in ``<root>/<name>``. The directories tried
in order are the root itself, ``<root>/<name>`` and the dataset's usual folder names (e.g.
``<root>/MNIST/raw`` as torchvision lays it out, ``<root>/mnist-10k``, ``<root>/cifar-10-batches-py``); the
first directory that holds every file wins. A raw file is preferred to its ``.gz`` twin; compression is
detected from the content, not the name.

Every file is validated: a missing directory or file, a truncated file or a file in the wrong format raises
a one-line error that names the file and what was expected.

Identity (MNIST and Fashion-MNIST use the same four file names, so a name alone proves nothing): a set of
files serves as ``mnist`` or ``fashion_mnist`` only if either

1. every file is one of the dataset's official files: its SHA-256 (and MD5) is the one listed in
   :data:`OFFICIAL_CHECKSUMS` (the ``.gz`` files as distributed; for MNIST also the uncompressed files); or
2. the folder names the dataset (the folder holding the files or its parent: a name containing ``fashion``
   for Fashion-MNIST; containing ``mnist`` and none of ``fashion``, ``emnist``, ``kmnist``, ``qmnist`` for
   MNIST; e.g. ``fashion_mnist``, ``FashionMNIST/raw``, ``mnist-10k``, ``MNIST/raw``) **and** the content
   agrees (:func:`idx_content_kind`): MNIST digits were size-normalised into a 20×20 box (LeCun et al.), so
   their non-zero pixels fit a 20×20 box (all 10 000 of the shared subset do); Fashion-MNIST products were
   resized so that their longest edge is 28 pixels (Xiao et al. 2017), so almost none do. A split (train or
   test) is read as digits when at least half its images fit the box, as clothing otherwise; images that are
   not 28×28 are neither.

A file whose checksum is the official one of the *other* dataset is refused outright. When no candidate
directory passes, :class:`DatasetIdentityError` (a ``ValueError``) names each folder, why it was refused
and the fix. ``Dataset.identity`` says how the files were identified. CIFAR batches are compared with the
official MD5s too (their file names already differ between CIFAR-10 and CIFAR-100); ``identity`` says
whether they matched.
"""

from gradlens.data.batches import BatchLoader, make_loader
from gradlens.data.cifar import read_cifar_batch
from gradlens.data.dataset import Dataset
from gradlens.data.digits import DIGITS_SPLIT_SEED
from gradlens.data.identity import OFFICIAL_CHECKSUMS, DatasetIdentityError, idx_content_kind
from gradlens.data.idx import read_idx
from gradlens.data.load import list_datasets, load_dataset, num_classes
from gradlens.data.locate import default_data_dir

__all__ = [
    "DIGITS_SPLIT_SEED",
    "OFFICIAL_CHECKSUMS",
    "BatchLoader",
    "Dataset",
    "DatasetIdentityError",
    "default_data_dir",
    "idx_content_kind",
    "list_datasets",
    "num_classes",
    "load_dataset",
    "make_loader",
    "read_cifar_batch",
    "read_idx",
]
