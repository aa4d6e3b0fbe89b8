"""The single-capture file: one ``Capture`` in one ``.flcap`` file.

Format (version 1)
------------------
A ``.flcap`` file is a NumPy ``.npz`` archive (a zip of ``.npy`` members, optionally deflated),
written with ``numpy.savez`` / ``numpy.savez_compressed`` and read with ``numpy.load(...,
allow_pickle=False)``: no member is ever unpickled, so reading a file never executes code.
It is written atomically (a temporary file in the same folder, fsync, ``os.replace``).

Members:

- ``__manifest__`` — uint8 [bytes]: UTF-8 JSON object, keys:

  - ``magic``: the string ``"flowlens-capture"``.
  - ``format_version``: integer, ``2`` (version 1 had no ``manifest_sha256``; it is still read).
    Readers refuse newer versions.
  - ``manifest_sha256``: hex sha256 of the manifest's canonical JSON without this key
    (``json.dumps(..., sort_keys=True)``); a hand-edited manifest (num_layers, camera validity,
    words, model) is refused on load.
  - ``layout``: ``TokenLayout.to_dict()`` (variant, prefix_len, segments).
  - ``num_layers``, ``num_heads``: integers (``Capture`` fields).
  - ``model``: string; ``metadata``: JSON object (``Capture.metadata``; numpy scalars become numbers,
    arrays lists).
  - ``policy``: the store policy the capture was reduced by (``flowlens.io.store``), or null.
  - ``precision``: how ``probs`` are stored (``float32`` | ``float16`` | ``bfloat16`` | ``uint8``,
    see ``flowlens.io.precision``).
  - ``max_abs_error``: float, the measured max |decoded − original| over all probabilities (0 for
    float32).
  - ``passes``: list, one object per ``AttentionPass`` in capture order, keys ``kind``
    (prefix/suffix/full), ``layers`` (list of layer ids), ``step`` (int or null), ``time`` (float
    or null), ``head_reduction`` (null/"mean"/"max"/"min"), ``probs`` (member name of the stored
    probabilities ``[layer, head, query, key]``), ``scale`` (member name of the uint8 row scales
    ``[layer, head, query]``, or null), ``query_rows`` (member name of the int64 ``[query]`` rows),
    ``residual`` (member name of the float32 ``[num_layers + 1, tokens, width]`` residual stream,
    or null / absent).
  - ``actions``: member name of the float32 ``[horizon, action_dim]`` actions, or null.
  - ``arrays``: object, member name → ``{"dtype": numpy dtype string, "shape": list, "sha256":
    hex digest of the C-order bytes}``. Every member except ``__manifest__`` is listed and checked
    on load.

Member names are ``pass{i}.probs``, ``pass{i}.scale``, ``pass{i}.query_rows``, ``pass{i}.residual``
and ``actions``.

Loading a truncated file, a foreign file (a random ``.npz``, a PNG renamed), a newer format
version, or an array whose checksum, dtype or shape disagrees with the manifest raises a
``FlowlensError`` naming the file and the problem.

Crafted files: nothing is allocated before it is checked. Each member's ``.npy`` header is read
first; its dtype and shape must equal the manifest's, the stored dtype must be the one the
manifest's ``precision`` implies, the member's uncompressed size in the zip must equal header +
data, and a deflated member may not expand more than ``MAX_DEFLATE_RATIO`` times beyond
``DEFLATE_CHECK_BYTES`` (attention data deflates about 2:1; a zip bomb does 1000:1). Only then are
the bytes read, into an array of the checked size.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.io import precision as _precision
from flowlens.io.files import atomic_write, check_format, dumps_json

MAGIC = "flowlens-capture"
FORMAT_VERSION = 2
SUFFIX = ".flcap"
_MANIFEST = "__manifest__"
_MANIFEST_SUM = "manifest_sha256"
MAX_DEFLATE_RATIO = 100
DEFLATE_CHECK_BYTES = 64 * 2**20
# The numpy dtype string each precision stores its probabilities as.
STORED_DTYPE = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "uint8": "|u1"}


def sha256_of(array: np.ndarray) -> str:
    """Hex sha256 of an array's C-order bytes."""
    a = np.ascontiguousarray(array)
    return hashlib.sha256(a.reshape(-1).view(np.uint8)).hexdigest()


def manifest_checksum(manifest: dict) -> str:
    """Hex sha256 of ``manifest``'s canonical JSON, leaving out its own ``manifest_sha256`` key."""
    body = {k: v for k, v in manifest.items() if k != _MANIFEST_SUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode("utf-8")).hexdigest()


def capture_manifest_and_arrays(
    capture: Capture, *, precision: str = "float32", policy: str | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """Encode ``capture`` into (manifest, member arrays) without writing anything."""
    _precision.check_precision(precision)
    arrays: dict[str, np.ndarray] = {}
    passes = []
    max_err = 0.0
    for i, p in enumerate(capture.passes):
        stored, scale, err = _precision.encode_with_error(p.probs, precision)
        max_err = max(max_err, err)
        arrays[f"pass{i}.probs"] = stored
        if scale is not None:
            arrays[f"pass{i}.scale"] = scale
        arrays[f"pass{i}.query_rows"] = np.asarray(p.query_rows, dtype=np.int64)
        if p.residual is not None:  # kept float32 whatever the probabilities' precision
            arrays[f"pass{i}.residual"] = np.asarray(p.residual, dtype=np.float32)
        passes.append(
            {
                "kind": p.kind.value,
                "layers": list(p.layers),
                "step": p.step,
                "time": None if p.time is None else float(p.time),
                "head_reduction": p.head_reduction,
                "probs": f"pass{i}.probs",
                "scale": f"pass{i}.scale" if scale is not None else None,
                "query_rows": f"pass{i}.query_rows",
                "residual": f"pass{i}.residual" if p.residual is not None else None,
            }
        )
    if capture.actions is not None:
        arrays["actions"] = np.asarray(capture.actions, dtype=np.float32)
    manifest = {
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "layout": capture.layout.to_dict(),
        "num_layers": int(capture.num_layers),
        "num_heads": int(capture.num_heads),
        "model": str(capture.model),
        "metadata": json.loads(dumps_json(capture.metadata, what="capture.metadata")),
        "policy": policy,
        "precision": precision,
        "max_abs_error": max_err,
        "passes": passes,
        "actions": "actions" if capture.actions is not None else None,
        "arrays": {
            k: {"dtype": v.dtype.str, "shape": list(v.shape), "sha256": sha256_of(v)}
            for k, v in arrays.items()
        },
    }
    manifest[_MANIFEST_SUM] = manifest_checksum(manifest)
    return manifest, arrays


def save_capture(
    capture: Capture, path: str | os.PathLike, *, precision: str = "float32", compress: bool = False
) -> Path:
    """Write one capture to a ``.flcap`` file, atomically.

    Args:
      capture: the capture; its probabilities ``[layer, head, query, key]`` are stored per pass.
      path: destination; ``.flcap`` is appended when it has no suffix. Parent folders are created.
      precision: ``float32`` (bitwise), ``float16``, ``bfloat16`` or ``uint8``
        (``flowlens.io.precision`` lists the error bounds; the measured error is in the manifest).
      compress: deflate the members (smaller, slower; random-looking float32 barely shrinks).

    Returns:
      The path written.
    """
    if not isinstance(capture, Capture):
        raise FlowlensError(f"capture must be a flowlens Capture, got {type(capture).__name__}.")
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(SUFFIX)
    if path.is_dir():
        raise FlowlensError(
            f"path {str(path)!r} is an existing folder; save_capture writes one file. Pass a file name "
            f"inside it, e.g. {str(path / ('capture' + SUFFIX))!r}."
        )
    write_capture(capture, path, precision=precision, compress=compress)
    return path


def write_capture(
    capture: Capture, path: Path, *, precision: str = "float32", compress: bool = False, policy: str | None = None
) -> dict:
    """``save_capture`` to exactly ``path``, returning the manifest written (for stores, which pass
    their ``policy`` so it is recorded)."""
    manifest, arrays = capture_manifest_and_arrays(capture, precision=precision, policy=policy)
    try:
        write_members(path, manifest, arrays, compress=compress)
    except OSError as e:
        raise FlowlensError(
            f"cannot write capture file {str(path)!r} ({e.strerror or e}); check the folder exists and is "
            "writable and that the file name is shorter than 200 characters."
        ) from None
    return manifest


def write_members(path: Path, manifest: dict, arrays: dict[str, np.ndarray], *, compress: bool) -> None:
    """Write a manifest and its arrays as an npz archive at ``path`` atomically."""
    blob = np.frombuffer(json.dumps(manifest, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    save = np.savez_compressed if compress else np.savez
    with atomic_write(path) as f:
        save(f, **{_MANIFEST: blob}, **arrays)


def _open_npz(path: Path):
    if not path.exists():
        raise FlowlensError(f"capture file {str(path)!r} does not exist.")
    if not path.is_file():
        raise FlowlensError(
            f"capture file {str(path)!r} is not a file (a folder? a capture store is "
            "opened with flowlens.io.open_store)."
        )
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        raise FlowlensError(
            f"{str(path)!r} is not a flowlens capture file: it does not start like a zip/npz archive "
            f"(first bytes {head!r}). Pass a file written by flowlens.io.save_capture."
        )
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise FlowlensError(
            f"capture file {str(path)!r} is truncated or corrupt (cannot open the archive: {e}). "
            "Re-create it; flowlens writes files atomically, so a partial file comes from a copy or disk."
        ) from None


def read_manifest(path: str | os.PathLike) -> dict:
    """Read and check only the manifest of a ``.flcap`` file (no arrays are loaded)."""
    path = Path(path)
    with _open_npz(path) as npz:
        return _manifest_of(npz, path)


def verify_file(path: str | os.PathLike) -> dict:
    """Check a ``.flcap`` file completely (manifest, every member's dtype, shape and sha256) without
    building the Capture; return its manifest. Raises FlowlensError like ``load_capture``."""
    path = Path(path)
    with _open_npz(path) as npz:
        manifest = _manifest_of(npz, path)
        for name in manifest["arrays"]:
            _load_member(npz, path, manifest, name)
    return manifest


def _manifest_of(npz, path: Path) -> dict:
    if _MANIFEST not in npz.files:
        raise FlowlensError(
            f"{str(path)!r} is an npz archive but not a flowlens capture file: it has no {_MANIFEST!r} "
            f"member (members: {sorted(npz.files)[:8]}). Pass a file written by flowlens.io.save_capture."
        )
    try:
        raw = npz[_MANIFEST]
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, UnicodeDecodeError) as e:
        raise FlowlensError(f"capture file {str(path)!r}: the manifest is corrupt ({e}).") from None
    if not isinstance(manifest, dict):
        raise FlowlensError(f"{str(path)!r} is not a flowlens capture file: its manifest is not a JSON object.")
    check_format(
        manifest, key="magic", magic=MAGIC, version=FORMAT_VERSION, what="capture file", where=str(path),
        fix="Upgrade flowlens to read it (or re-save it with this version).",
    )
    if manifest["format_version"] >= 2 and manifest.get(_MANIFEST_SUM) != manifest_checksum(manifest):
        raise FlowlensError(
            f"capture file {str(path)!r}: the manifest's checksum does not match its content (it was edited "
            "after writing: num_layers, layout, words, model or metadata changed). Re-create the file."
        )
    arrays = manifest.get("arrays")
    if not isinstance(arrays, dict) or not arrays or not all(isinstance(v, dict) for v in arrays.values()):
        raise FlowlensError(
            f"capture file {str(path)!r} has a malformed manifest: 'arrays' must be a non-empty object of "
            f"member descriptions, got {str(arrays)[:80]!r}. Re-create the file."
        )
    precision = manifest.get("precision", "float32")
    if precision not in STORED_DTYPE:
        raise FlowlensError(
            f"capture file {str(path)!r} has unknown precision {precision!r} in its manifest "
            f"(expected one of {list(STORED_DTYPE)})."
        )
    return manifest


def _read_header(member) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    return np.lib.format.read_array_header_2_0(member)


def _load_member(npz, path: Path, manifest: dict, name: str, *, dtype: str | None = None) -> np.ndarray:
    """Read member ``name`` after checking its header, size and dtype (``dtype``: the one required)
    against the manifest; then its sha256."""
    info = manifest["arrays"].get(name) if isinstance(name, str) else None
    archive = npz.zip
    entry = f"{name}.npy"
    if info is None or entry not in archive.namelist():
        raise FlowlensError(
            f"capture file {str(path)!r} is missing member {name!r} listed in its manifest (or it is not "
            "an .npy member)."
        )
    where = f"capture file {str(path)!r}: member {name!r}"
    try:
        zinfo = archive.getinfo(entry)
        with archive.open(zinfo) as member:
            shape, fortran, found = _read_header(member)
            header_len = member.tell()
        nbytes = int(np.prod(shape, dtype=np.int64)) * found.itemsize
        want = (dtype or info.get("dtype"), list(info.get("shape", ())))
        if found.hasobject or found.str != want[0] or list(shape) != want[1] or fortran:
            raise FlowlensError(
                f"{where} has dtype {found.str} shape {list(shape)}, the manifest (and its precision) say "
                f"{want[0]} {want[1]}. The file was modified after writing."
            )
        if zinfo.file_size != header_len + nbytes:
            raise FlowlensError(
                f"{where} declares {nbytes} data bytes but the archive holds {zinfo.file_size - header_len}; "
                "the file is truncated or crafted."
            )
        if zinfo.file_size > max(DEFLATE_CHECK_BYTES, MAX_DEFLATE_RATIO * zinfo.compress_size):
            raise FlowlensError(
                f"{where} would expand {zinfo.file_size / max(zinfo.compress_size, 1):.0f}× to "
                f"{zinfo.file_size / 2**20:.0f} MiB; attention data deflates far less (a zip bomb?). Refused."
            )
        with archive.open(zinfo) as member:
            arr = np.lib.format.read_array(member, allow_pickle=False)
    except FlowlensError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, TypeError, MemoryError) as e:
        raise FlowlensError(f"{where} is corrupt ({type(e).__name__}: {e}).") from None
    if sha256_of(arr) != info["sha256"]:
        raise FlowlensError(
            f"capture file {str(path)!r}: checksum mismatch for member {name!r} (sha256 differs from the "
            "manifest). The file is corrupt or was modified; re-create it."
        )
    return arr


def load_capture(path: str | os.PathLike) -> Capture:
    """Read a ``.flcap`` file written by ``save_capture`` (every array checksum-checked).

    Returns:
      The Capture; probabilities are float32 ``[layer, head, query, key]`` (decoded from the stored
      precision; ``capture.metadata`` is as saved).

    Raises:
      FlowlensError: missing, truncated, foreign, newer-version or corrupt file.
    """
    path = Path(path)
    with _open_npz(path) as npz:
        manifest = _manifest_of(npz, path)
        try:
            layout = TokenLayout.from_dict(manifest["layout"])
            precision = manifest.get("precision", "float32")
            passes = []
            for p in manifest["passes"]:
                stored = _load_member(npz, path, manifest, p["probs"], dtype=STORED_DTYPE[precision])
                if (precision == "uint8") != bool(p.get("scale")):
                    raise FlowlensError(
                        f"precision {precision!r} {'needs' if precision == 'uint8' else 'has no'} per-row scales, "
                        f"but the {p['kind']} pass {'lacks' if precision == 'uint8' else 'has'} them."
                    )
                scale = _load_member(npz, path, manifest, p["scale"], dtype="<f4") if p.get("scale") else None
                rows = _load_member(npz, path, manifest, p["query_rows"], dtype="<i8")
                residual = _load_member(npz, path, manifest, p["residual"], dtype="<f4") if p.get("residual") else None
                passes.append(
                    AttentionPass(
                        kind=PassKind(p["kind"]),
                        probs=_precision.decode(stored, precision, scale),
                        layers=tuple(p["layers"]),
                        query_rows=rows,
                        step=p["step"],
                        time=p["time"],
                        head_reduction=p["head_reduction"],
                        residual=residual,
                    )
                )
            actions = (
                _load_member(npz, path, manifest, manifest["actions"], dtype="<f4")
                if manifest.get("actions")
                else None
            )
            with warnings.catch_warnings():
                if precision != "float32":
                    # Reduced precision moves row sums off 1 by up to key_count × the stated error bound;
                    # the measured error is in the manifest, so the generic row-sum warning is noise here.
                    warnings.filterwarnings("ignore", message=".*rows do not sum to 1", category=UserWarning)
                return Capture(
                    layout=layout,
                    num_layers=int(manifest["num_layers"]),
                    num_heads=int(manifest["num_heads"]),
                    passes=tuple(passes),
                    actions=actions,
                    model=manifest["model"],
                    metadata=manifest["metadata"],
                )
        except FlowlensError as e:
            if str(path) in str(e):
                raise
            raise FlowlensError(f"capture file {str(path)!r} holds an invalid capture: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise FlowlensError(
                f"capture file {str(path)!r} has a malformed manifest ({type(e).__name__}: {e})."
            ) from None
