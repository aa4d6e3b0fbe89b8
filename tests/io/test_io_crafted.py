"""Crafted and edited capture files (issue 14, items 4, 5, 11): refused before anything big is
allocated, with a FlowlensError naming the file; edited manifests and mismatched precisions refused."""

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.io import capture_file as cf
from flowlens.io.capture_file import load_capture, save_capture, verify_file


def _members(path):
    with np.load(path, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    return json.loads(members.pop("__manifest__").tobytes()), members


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _write_zip(path, manifest, raw: dict[str, bytes], *, deflate=(), resum=True):
    """A .flcap zip by hand: ``raw`` maps zip member names to bytes (``deflate``: names compressed)."""
    if resum:
        manifest = {**manifest, "manifest_sha256": cf.manifest_checksum(manifest)}
    blob = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__manifest__.npy", _npy(blob))
        for name, data in raw.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED)


def _raw(members):
    return {f"{k}.npy": _npy(v) for k, v in members.items()}


def test_huge_declared_shape_is_refused_before_allocating(tmp_path, random_capture):
    path = save_capture(random_capture(0), tmp_path / "c.flcap")
    manifest, members = _members(path)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**18, 2**18)})
    raw = _raw(members) | {"pass0.probs.npy": b"\x93NUMPY" + header.getvalue()[6:] + b"\0" * 64}
    bad = tmp_path / "huge.flcap"
    _write_zip(bad, manifest, raw)
    assert bad.stat().st_size < 20_000
    with pytest.raises(FlowlensError, match=r"huge\.flcap.*pass0\.probs.*shape \[262144, 262144\]"):
        load_capture(bad)
    # ... also when the manifest is crafted to agree: the archive does not hold the declared bytes
    manifest["arrays"]["pass0.probs"]["shape"] = [2**18, 2**18]
    _write_zip(bad, manifest, raw)
    with pytest.raises(FlowlensError, match=r"declares 274877906944 data bytes but the archive holds 64"):
        verify_file(bad)


def test_zip_bomb_is_refused_with_bounded_memory(tmp_path, random_capture):
    path = save_capture(random_capture(0), tmp_path / "c.flcap")
    manifest, members = _members(path)
    zeros = np.zeros((2, 2, 4096, 4096), np.float32)  # 256 MiB of zeros deflates to about 0.25 MB
    manifest["arrays"]["pass0.probs"] = {"dtype": "<f4", "shape": list(zeros.shape), "sha256": cf.sha256_of(zeros)}
    raw = _raw(members) | {"pass0.probs.npy": _npy(zeros)}
    del zeros
    bomb = tmp_path / "bomb.flcap"
    _write_zip(bomb, manifest, raw, deflate={"pass0.probs.npy"})
    del raw
    assert bomb.stat().st_size < 2e6
    tracemalloc.start()
    try:
        with pytest.raises(FlowlensError, match=r"bomb\.flcap.*would expand \d+× to 256 MiB"):
            load_capture(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6


def test_edited_manifest_is_refused(tmp_path, random_capture):
    path = save_capture(random_capture(0), tmp_path / "c.flcap")
    manifest, members = _members(path)
    for edit in (
        lambda m: m.update(num_layers=m["num_layers"] + 1),
        lambda m: m.update(model="other"),
        lambda m: m["layout"]["segments"][0].update(valid=not m["layout"]["segments"][0].get("valid", True)),
        lambda m: m["metadata"].update(prompt="something else"),
    ):
        edited = json.loads(json.dumps(manifest))
        edit(edited)
        _write_zip(path, edited, _raw(members), resum=False)
        with pytest.raises(FlowlensError, match=r"c\.flcap.*manifest's checksum does not match"):
            load_capture(path)


@pytest.mark.parametrize("actual", ["float32", "float16", "uint8"])
def test_precision_claim_must_match_the_stored_dtype(tmp_path, random_capture, actual):
    path = save_capture(random_capture(0), tmp_path / "c.flcap", precision=actual)
    manifest, members = _members(path)
    manifest["precision"] = "bfloat16"
    _write_zip(path, manifest, _raw(members))  # consistently crafted: the checksum is recomputed
    with pytest.raises(FlowlensError, match=r"pass0\.probs.*precision\) say <u2"):
        load_capture(path)


def test_malformed_manifests_and_members_are_flowlens_errors(tmp_path, random_capture):
    path = save_capture(random_capture(0), tmp_path / "c.flcap")
    manifest, members = _members(path)
    _write_zip(path, {**manifest, "arrays": []}, _raw(members))
    with pytest.raises(FlowlensError, match=r"malformed manifest: 'arrays' must be a non-empty object"):
        load_capture(path)
    raw = _raw(members)
    raw["pass0.probs"] = raw.pop("pass0.probs.npy")  # a member that is not .npy
    _write_zip(path, manifest, raw)
    with pytest.raises(FlowlensError, match=r"missing member 'pass0\.probs'.*not an \.npy member"):
        load_capture(path)
    with pytest.raises(FlowlensError, match=r"missing member"):
        verify_file(path)


def test_save_onto_a_folder_names_the_fix(tmp_path, random_capture):
    (tmp_path / "out.flcap").mkdir()
    with pytest.raises(FlowlensError, match=r"out\.flcap' is an existing folder.*capture\.flcap"):
        save_capture(random_capture(0), tmp_path / "out.flcap")


def test_version_1_files_without_a_manifest_checksum_still_load(tmp_path, random_capture, assert_captures_equal):
    cap = random_capture(0)
    path = save_capture(cap, tmp_path / "c.flcap")
    manifest, members = _members(path)
    old = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "policy")} | {"format_version": 1}
    _write_zip(path, old, _raw(members), resum=False)
    assert_captures_equal(cap, load_capture(path))
