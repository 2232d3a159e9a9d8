"""The metadata of a GGUF file (the format llama.cpp loads): its key/value section and its tensor index.

One reader for both uses: the lock pins a file's header fields and parameter count, the gateway rebuilds the
tokenizer from the vocabulary arrays. It maps the file and unpacks only the values asked for, stepping over the rest:
gguf.GGUFReader decodes every value of the file into numpy views and takes seconds on SmolLM2-135M. Standard library
only, so the gateway process reads a tokenizer without the `gguf` package or the lock's hub client.
"""
from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

_MAGIC = b"GGUF"
# Value types (the GGUF spec): scalars by struct format, then string and array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 8  # ggml tensors have at most 4: more is a corrupt count, not a reason to loop billions of times


class NotGguf(ValueError):
    """Not a GGUF file this reader can read: another format, a truncated or corrupt file, or GGUF v1."""


@dataclass(frozen=True)
class Gguf:
    version: int
    metadata: dict[str, Any]  # the wanted keys the file has, arrays as lists
    tensor_count: int
    parameters: int  # elements of every tensor in the index


def read_gguf(f: BinaryIO, wanted: Callable[[str], bool]) -> Gguf:
    """The metadata of the open GGUF file `f` whose keys are `wanted`, and its tensor index's parameter count.
    NotGguf when `f` is not a GGUF file this reader can read."""
    if os.fstat(f.fileno()).st_size < len(_MAGIC) + 4:
        raise NotGguf("not a GGUF file")
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:len(_MAGIC)] != _MAGIC:
            raise NotGguf("not a GGUF file")
        try:
            return _Reader(data).read(wanted)
        except (struct.error, UnicodeDecodeError, OverflowError) as exc:
            raise NotGguf(f"corrupt GGUF file: {exc}") from None


class _Reader:
    def __init__(self, data: mmap.mmap) -> None:
        # The version is a small number: read little-endian, a big-endian file's has its low bytes 0 (such files
        # exist, rarely).
        self.order = "<" if struct.unpack_from("<I", data, 4)[0] & 0xFFFF else ">"
        self._length = struct.Struct(self.order + "Q")
        self.data, self.pos = data, 4

    def read(self, wanted: Callable[[str], bool]) -> Gguf:
        version = self._unpack("I")
        if version < 2:
            raise NotGguf("GGUF v1 is not supported")
        tensor_count, kv_count = self._unpack("Q"), self._unpack("Q")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = self._string()
            keep = wanted(key)
            value = self._value(self._unpack("I"), keep)
            if keep:
                metadata[key] = value
        return Gguf(version, metadata, tensor_count, self._parameters(tensor_count))

    def _parameters(self, tensor_count: int) -> int:
        total = 0
        for _ in range(tensor_count):
            self._string(keep=False)  # name
            dims = self._unpack("I")
            if dims > _MAX_DIMS:
                raise NotGguf(f"a tensor with {dims} dimensions")
            count = 1
            for _ in range(dims):
                count *= self._unpack("Q")
            self.pos += struct.calcsize(self.order + "IQ")  # ggml type, offset of the data
            total += count
        return total

    def _unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(self.order + fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(self.order + fmt)
        return value

    def _string(self, keep: bool = True) -> str | None:
        strings = self._strings(1, keep)
        return strings[0] if strings else None

    def _strings(self, count: int, keep: bool) -> list[str] | None:
        # One loop with its names bound locally: a vocabulary is ~100k strings (SmolLM2's tokens and merges), and
        # a method call per string took twice as long.
        data, pos, end, length_at = self.data, self.pos, len(self.data), self._length.unpack_from
        strings: list[str] | None = [] if keep else None
        for _ in range(count):
            (length,) = length_at(data, pos)
            pos += 8 + length
            if pos > end:
                raise NotGguf("truncated GGUF file")
            if strings is not None:
                strings.append(data[pos - length:pos].decode("utf-8"))
        self.pos = pos
        return strings

    def _value(self, kind: int, keep: bool) -> Any:
        if kind in _SCALARS:
            return self._unpack(_SCALARS[kind])
        if kind == _STRING:
            return self._string(keep)
        if kind != _ARRAY:
            raise NotGguf(f"unknown GGUF value type {kind}")
        item, count = self._unpack("I"), self._unpack("Q")
        if item in _SCALARS:  # one unpack for the whole array (token types: 49k of them for SmolLM2)
            fmt = f"{self.order}{count}{_SCALARS[item]}"
            values = list(struct.unpack_from(fmt, self.data, self.pos)) if keep else None
            self.pos += struct.calcsize(fmt)
            return values
        if item == _STRING:
            return self._strings(count, keep)
        if keep:  # arrays of arrays, which the format allows
            return [self._value(item, True) for _ in range(count)]
        for _ in range(count):
            self._value(item, False)
        return None
