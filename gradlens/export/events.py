"""TensorBoard event files written from numpy: Event protos for a fixed list of tags, serialised and
checksummed many at a time, without TensorFlow and without a Python call per value.

An event file is a sequence of TFRecords: ``uint64 length``, ``masked_crc32c(length)``, the serialised
``Event`` proto, ``masked_crc32c(event)`` (CRC-32C, Castagnoli, masked as ``((c >> 15 | c << 17) +
0xa282ead8) mod 2**32``). One step's values of a layout are one ``Event {wall_time, step, summary {value
{tag, simple_value} ...}}``. Every event of a layout has the same length: the step is a varint padded to
``STEP_BYTES`` bytes (protobuf readers accept non-minimal varints) and the values are fixed32 floats, so the
events of K steps are a ``[K, n]`` byte array made from one template. CRC-32C is affine in the message bits
for a fixed length, ``crc(x) = crc(t) ^ A(x ^ t)`` with ``A`` the CRC register without its initial and final
xor, so only the bytes that change (step and values) are looked up: ``A`` of byte b at position p is
``Z^(n-1-p)(T[b])``, T the CRC table and Z one zero byte through the register.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import numpy as np

POLYNOMIAL = 0x82F63B78  # CRC-32C, reflected
STEP_BYTES = 5  # steps below 2**35
MASK_DELTA = 0xA282EAD8


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(POLYNOMIAL), table >> 1).astype(np.uint32)
    return table


TABLE = _crc_table()
_TABLE = TABLE.tolist()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (a Python loop: for templates and single records only)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked(crc: np.ndarray | int) -> np.ndarray | int:
    """TFRecord's masked CRC of one value or an array of uint32."""
    if isinstance(crc, int):
        return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF
    crc = crc.astype(np.uint64)
    return ((((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF).astype(np.uint32)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def record(event: bytes) -> bytes:
    """One TFRecord holding ``event``."""
    length = struct.pack("<Q", len(event))
    return length + struct.pack("<I", masked(crc32c(length))) + event + struct.pack("<I", masked(crc32c(event)))


class ScalarLayout:
    """Events of one fixed list of scalar tags: ``encode(steps [K], values [K, V])`` -> K TFRecords."""

    def __init__(self, tags: list[str], wall_time: float) -> None:
        values, value_at = [], []
        summary = bytearray()
        for tag in tags:
            name = tag.encode()
            value = b"\x0a" + varint(len(name)) + name + b"\x15"
            head = b"\x0a" + varint(len(value) + 4)
            value_at.append(len(summary) + len(head) + len(value))
            summary += head + value + b"\0\0\0\0"
            values.append(value)
        head = b"\x09" + struct.pack("<d", wall_time) + b"\x10"
        self.step_at = len(head)
        body = head + bytes(STEP_BYTES) + b"\x2a" + varint(len(summary))
        event = body + bytes(summary)
        self.template = np.frombuffer(event, dtype=np.uint8).copy()
        self.value_at = (len(body) + np.asarray(value_at, dtype=np.intp))[:, None] + np.arange(4)  # [V, 4]
        self.positions = np.concatenate([self.step_at + np.arange(STEP_BYTES), self.value_at.ravel()])
        self.base = np.uint32(crc32c(event))
        self.table = self._position_table(len(event))
        length = struct.pack("<Q", len(event))
        self.header = np.frombuffer(length + struct.pack("<I", masked(crc32c(length))), dtype=np.uint8)

    def _position_table(self, n: int) -> np.ndarray:
        """``A`` of every byte value at every varying position: ``[P, 256]`` uint32."""
        order = np.argsort(-self.positions)  # from the end: fewest zero bytes after them first
        table = np.empty((len(self.positions), 256), dtype=np.uint32)
        register, zeros = TABLE.copy(), 0
        for index in order:
            wanted = n - 1 - int(self.positions[index])
            while zeros < wanted:
                register = TABLE[register & 0xFF] ^ (register >> 8)
                zeros += 1
            table[index] = register
        return table

    def encode(self, steps: np.ndarray, values: np.ndarray) -> bytes:
        """The TFRecords of ``steps [K]`` (int, < 2**35) with ``values [K, V]`` (stored as float32)."""
        steps = np.asarray(steps, dtype=np.int64)
        count = len(steps)
        if not count:
            return b""
        data = np.broadcast_to(self.template, (count, len(self.template))).copy()
        for i in range(STEP_BYTES):
            data[:, self.step_at + i] = ((steps >> (7 * i)) & 0x7F) | (0x80 if i < STEP_BYTES - 1 else 0)
        floats = np.ascontiguousarray(values, dtype="<f4").view(np.uint8).reshape(count, -1, 4)
        data[:, self.value_at] = floats
        changed = data[:, self.positions] ^ self.template[self.positions]
        crc = self.base ^ np.bitwise_xor.reduce(self.table[np.arange(len(self.positions)), changed], axis=1)
        out = np.empty((count, len(self.header) + data.shape[1] + 4), dtype=np.uint8)
        out[:, : len(self.header)] = self.header
        out[:, len(self.header) : -4] = data
        out[:, -4:] = masked(crc).astype("<u4").view(np.uint8).reshape(count, 4)
        return out.tobytes()


class EventFile:
    """An event file in ``directory`` that TensorBoard reads (``events.out.tfevents.<time>.<host>.gradlens``)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.wall_time = time.time()
        name = f"events.out.tfevents.{int(self.wall_time):010d}.{socket.gethostname()}.{os.getpid()}.gradlens"
        self.path = directory / name
        self._handle = open(self.path, "wb")
        version = b"brain.Event:2"  # Event.file_version (field 3), the first record of every event file
        header = b"\x09" + struct.pack("<d", self.wall_time) + b"\x1a" + varint(len(version))
        self._handle.write(record(header + version))

    def write(self, records: bytes) -> None:
        self._handle.write(records)

    def close(self) -> None:
        self._handle.close()
