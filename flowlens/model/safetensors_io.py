"""safetensors files: read (memory-mapped, no torch) and write numpy arrays.

The format (huggingface/safetensors, documented in its README): an 8-byte little-endian unsigned
header length ``n``, ``n`` bytes of UTF-8 JSON, then one byte buffer. The JSON maps each tensor
name to ``{"dtype": "F32" | "BF16" | ..., "shape": [...], "data_offsets": [begin, end]}``
(offsets into the byte buffer, row-major little-endian data) and may hold a ``"__metadata__"``
dict of strings. Nothing in the file is executed: reading it parses JSON and maps bytes.

:class:`SafetensorsFile` maps the file read-only; :meth:`SafetensorsFile.get` returns a numpy view
of one tensor (bfloat16 through ``ml_dtypes``) whose pages the OS loads on first touch, and
:meth:`SafetensorsFile.release` hands those pages back, so a converter that copies one tensor at a
time keeps about one copy of the weights resident, not two.

Example::

    with SafetensorsFile("ckpt/model.safetensors") as f:
        w = np.array(f.get("action_in_proj.weight"))       # [out, in], a private copy
    write_safetensors("out.safetensors", {"w": w}, metadata={"format": "pt"})
"""

from __future__ import annotations

import json
import mmap
import os
import pathlib
import struct
from collections.abc import Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

from flowlens.errors import FlowlensError

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_CODES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 2**20  # the reference implementation's limit


class SafetensorsFile:
    """A safetensors file opened read-only and memory-mapped.

    Attributes:
      path: the file.
      metadata: the header's ``__metadata__`` (str → str), possibly empty.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path).expanduser()
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise FlowlensError(f"cannot open safetensors file {str(self.path)!r}: {e.strerror}.") from None
        size = os.fstat(self._fh.fileno()).st_size
        head = self._fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if n < 2 or n > min(_MAX_HEADER, size - 8):
            self._fh.close()
            raise FlowlensError(
                f"{str(self.path)!r} is not a safetensors file: its first 8 bytes give a header of {n} bytes "
                f"(file size {size}). Pass a model.safetensors written by safetensors / openpi / LeRobot."
            )
        try:
            header = json.loads(self._fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self._fh.close()
            raise FlowlensError(f"{str(self.path)!r}: the safetensors header is not JSON ({e}).") from None
        self.metadata: dict[str, str] = dict(header.pop("__metadata__", None) or {})
        self._start = 8 + n
        self._entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        for name, e in header.items():
            code = e.get("dtype") if isinstance(e, Mapping) else None
            if code not in DTYPES:
                self._fh.close()
                raise FlowlensError(
                    f"{str(self.path)!r}: tensor {name!r} has dtype {code!r}; flowlens reads {sorted(DTYPES)}."
                )
            shape = tuple(int(s) for s in e["shape"])
            begin, end = (int(o) for o in e["data_offsets"])
            if end - begin != int(np.prod(shape)) * DTYPES[code].itemsize or self._start + end > size:
                self._fh.close()
                raise FlowlensError(
                    f"{str(self.path)!r}: tensor {name!r} ({code}, shape {shape}) has data offsets "
                    f"[{begin}, {end}] that do not fit its size or the file ({size} bytes); the file is truncated "
                    "or corrupt."
                )
            self._entries[name] = (DTYPES[code], shape, begin, end)
        self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ) if size > self._start else None

    # -- mapping-like access --
    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> np.dtype:
        return self._entries[name][0]

    @property
    def nbytes(self) -> int:
        return sum(e[3] - e[2] for e in self._entries.values())

    def get(self, name: str) -> np.ndarray:
        """A read-only view of tensor ``name`` [shape as stored] backed by the mapped file."""
        dtype, shape, begin, end = self._entries[name]
        if end == begin:
            return np.zeros(shape, dtype)
        arr = np.frombuffer(self._mm, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=self._start + begin)
        return arr.reshape(shape)

    def release(self, name: str) -> None:
        """Drop the resident pages of tensor ``name`` (views stay valid; they re-read on touch)."""
        if self._mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        _, _, begin, end = self._entries[name]
        page = mmap.PAGESIZE
        lo = (self._start + begin) // page * page
        if end > begin:
            self._mm.madvise(mmap.MADV_DONTNEED, lo, self._start + end - lo)

    def close(self) -> None:
        self._entries = {}
        self._fh.close()  # the map itself closes once no view refers to it

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    *,
    metadata: Mapping[str, str] | None = None,
) -> pathlib.Path:
    """Write named arrays (a Mapping or ``(name, array)`` pairs, in that order) as a safetensors file.

    The file is written to ``<path>.partial`` and renamed, so a reader never sees half a file.

    Raises:
      FlowlensError: an array dtype the format has no code for, or a duplicate name.
    """
    items = dict(tensors.items() if isinstance(tensors, Mapping) else tensors)
    specs = [(name, tuple(a.shape), a.dtype) for name, a in items.items()]
    return write_safetensors_streamed(path, specs, items.__getitem__, metadata=metadata)


def write_safetensors_streamed(
    path: str | os.PathLike,
    specs: Iterable[tuple[str, tuple[int, ...], np.dtype]],
    produce: Callable[[str], np.ndarray],
    *,
    metadata: Mapping[str, str] | None = None,
) -> pathlib.Path:
    """Write a safetensors file whose tensors are made one at a time by ``produce(name)``.

    ``specs`` lists ``(name, shape, dtype)`` in file order (the header comes first); each array
    ``produce`` returns must match its spec, and is dropped once written, so writing needs one
    tensor's memory, not the whole file's.

    Raises:
      FlowlensError: a dtype the format has no code for, a duplicate name, or a produced array
        that does not match its spec.
    """
    specs = list(specs)
    header: dict[str, object] = {}
    offset = 0
    for name, shape, dtype in specs:
        dt = np.dtype(dtype).newbyteorder("=")
        if dt not in _CODES:
            raise FlowlensError(f"tensor {name!r} has dtype {dtype}; safetensors takes {sorted(DTYPES)}.")
        if name in header:
            raise FlowlensError(f"tensor name {name!r} appears twice; names must be unique.")
        size = int(np.prod(shape)) * dt.itemsize
        header[name] = {"dtype": _CODES[dt], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **header}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    out = pathlib.Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype in specs:
            arr = np.asarray(produce(name))
            same_dtype = np.dtype(arr.dtype).newbyteorder("=") == np.dtype(dtype).newbyteorder("=")
            if tuple(arr.shape) != tuple(shape) or not same_dtype:
                f.close()
                tmp.unlink()
                raise FlowlensError(
                    f"tensor {name!r}: produced {arr.dtype} {arr.shape}, but the header says {dtype} {tuple(shape)}."
                )
            little = np.ascontiguousarray(arr).astype(np.dtype(arr.dtype).newbyteorder("<"), copy=False)
            f.write(little.reshape(-1).view(np.uint8).data)
            del arr, little
    os.replace(tmp, out)
    return out


__all__ = ["DTYPES", "SafetensorsFile", "write_safetensors", "write_safetensors_streamed"]
