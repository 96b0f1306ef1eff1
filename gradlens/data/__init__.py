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

Where files are looked for (:mod:`gradlens.data.locate`): the data folders are those of ``data_dir`` (one
path, a sequence of paths, or one string of paths separated by ``os.pathsep``), else of ``$GRADLENS_DATA``
(the same string form), else :func:`default_data_dir`; then the operating system's dataset folders
(``/usr/share/datasets``: Debian's ``dataset-fashion-mnist`` installs the real Fashion-MNIST there).
:func:`data_dirs` lists them. Under each, the folder itself, ``<folder>/<name>`` and the dataset's usual
folder names are tried (e.g. ``MNIST/raw`` as torchvision lays it out, ``mnist-10k``, ``fashion-mnist``,
``cifar-10-batches-py``); the first that holds every file and passes the identity checks wins, so each
dataset comes from whichever data folder holds it. ``download=True`` puts missing files in
``<first folder>/<name>``. A raw file is preferred to its ``.gz`` twin; compression is detected from the
content, not the name.

Every file is validated: a missing directory or file, a truncated file or a file in the wrong format raises
a one-line error that names the file and what was expected.

Identity (:mod:`gradlens.data.identity`; MNIST and Fashion-MNIST use the same four file names, so a name
alone proves nothing): a set of files serves as ``mnist`` or ``fashion_mnist`` only if every file holds the
dataset's official content (:data:`OFFICIAL_CHECKSUMS`: the distributed ``.gz`` file's checksum, or the
SHA-256 of its decompressed IDX payload, which no recompression changes), or if the folder names the dataset
and the content agrees (:func:`idx_content_kind`: MNIST digits were size-normalised into a 20×20 box,
Fashion-MNIST products span 28 pixels). The other dataset's official content, and a file as large as the
original release's but with other content (damaged or altered), are refused outright. A folder that is
refused is passed over for the next one (``Dataset.passed_over`` records it); when none passes,
:class:`DatasetIdentityError` (a ``ValueError``) names each folder, why it was refused and the fix.
``Dataset.identity`` says how the files were identified. CIFAR batches are compared with the official MD5s
too (their file names already differ between CIFAR-10 and CIFAR-100); ``identity`` says whether they matched.
"""

from gradlens.data.batches import BatchLoader, make_loader
from gradlens.data.cifar import read_cifar_batch
from gradlens.data.dataset import Dataset
from gradlens.data.digits import DIGITS_SPLIT_SEED
from gradlens.data.identity import OFFICIAL_CHECKSUMS, DatasetIdentityError, idx_content_kind
from gradlens.data.idx import read_idx
from gradlens.data.load import list_datasets, load_dataset, num_classes
from gradlens.data.locate import data_dirs, default_data_dir

__all__ = [
    "DIGITS_SPLIT_SEED",
    "OFFICIAL_CHECKSUMS",
    "BatchLoader",
    "Dataset",
    "DatasetIdentityError",
    "data_dirs",
    "default_data_dir",
    "idx_content_kind",
    "list_datasets",
    "num_classes",
    "load_dataset",
    "make_loader",
    "read_cifar_batch",
    "read_idx",
]
