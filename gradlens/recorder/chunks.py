"""Encode a whole chunk of a column as HDF5's own filters would: byte shuffle, deflate, Fletcher-32.

Version 3 columns are created with the filter pipeline shuffle → deflate → fletcher32 (HDF5 filter ids 2, 1,
3, in that order), so every HDF5 reader decodes their chunks. The recorder writes each chunk once, when it is
complete, with ``H5Dwrite_chunk`` (h5py's ``write_direct_chunk``): the bytes are made here, in numpy and zlib,
because a chunk written through HDF5's filters while a file is in SWMR mode cannot grow in place, and the space
of every earlier version of a growing chunk would be lost (SWMR writers never reuse freed file space).

- shuffle (HDF5's ``H5Z_FILTER_SHUFFLE``): the k-th bytes of every element together, k = 0 .. itemsize-1;
- deflate: a zlib stream (``compress2``), level ``DEFLATE_LEVEL``;
- Fletcher-32 over the deflated bytes, appended little-endian: with 16-bit big-endian words w_1 .. w_n (an odd
  last byte padded with 0), s1 = Σ w_i mod 65535 and s2 = Σ (n - i + 1) w_i mod 65535, each 65535 instead of 0
  when its sum is positive (HDF5 reduces by folding, which never reaches 0 once a sum is positive); the
  checksum is s2 << 16 | s1.
"""

from __future__ import annotations

import zlib

import numpy as np

# Measured on GradStats statistics (float32, chunks of 436 x 8) of 3000 minibatch-SGD steps of a 150-parameter
# MLP on MNIST: levels 1, 4, 6, 9 keep 83.4, 81.6, 80.8, 80.7 % of the bytes at 25, 24, 17, 10 MB/s (one
# loaded core). The three low bytes of a noisy statistic are noise; only its sign-and-exponent byte compresses.
DEFLATE_LEVEL = 4


def fletcher32(data: bytes) -> int:
    """HDF5's Fletcher-32 checksum of ``data`` (``H5_checksum_fletcher32``)."""
    if len(data) % 2:
        data += b"\0"
    words = np.frombuffer(data, dtype=">u2").astype(np.uint64)
    if not words.any():
        return 0
    # Both sums are positive here. Weights reduced mod 65535 keep every term below 2**32, so the sum of up to
    # 2**31 words stays below 2**63.
    weights = np.arange(len(words), 0, -1, dtype=np.uint64) % np.uint64(65535)
    f1 = int(words.sum()) % 65535 or 65535
    f2 = int(words @ weights) % 65535 or 65535
    return (f2 << 16) | f1


def encode(chunk: np.ndarray, level: int = DEFLATE_LEVEL) -> bytes:
    """One whole chunk (C order, the dataset's dtype) as the bytes HDF5 stores with shuffle, deflate (``level``),
    fletcher32."""
    chunk = np.ascontiguousarray(chunk)
    raw = chunk.view(np.uint8).reshape(-1)
    if chunk.itemsize > 1 and chunk.size > 1:  # HDF5 leaves one-byte types and one-element chunks unshuffled
        raw = raw.reshape(chunk.size, chunk.itemsize).T
    body = zlib.compress(raw.tobytes(), level)
    return body + fletcher32(body).to_bytes(4, "little")
