import json
import zipfile

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.io import capture_file as cf
from flowlens.io.capture_file import load_capture, read_manifest, save_capture
from flowlens.io.precision import ERROR_BOUND, PRECISIONS


@pytest.mark.parametrize("compress", [False, True], ids=["stored", "deflated"])
def test_round_trip_is_bitwise(tmp_path, capture, compress, assert_captures_equal):
    path = save_capture(capture, tmp_path / "a", compress=compress)
    assert path.name == "a.flcap"
    back = load_capture(path)
    assert_captures_equal(capture, back)
    assert not [p for p in tmp_path.iterdir() if p.name != "a.flcap"], "temp file left behind"


def test_metadata_numpy_scalars_and_nested(tmp_path, random_capture):
    c = random_capture(
        1, metadata={"frame": np.int64(3), "score": np.float32(0.5), "tags": ["a", {"b": None}]}
    )
    back = load_capture(save_capture(c, tmp_path / "m.flcap"))
    assert back.metadata == {"frame": 3, "score": 0.5, "tags": ["a", {"b": None}]}


def test_unserialisable_metadata_is_a_clear_error(tmp_path, random_capture):
    c = random_capture(1, metadata={"obj": object()})
    with pytest.raises(FlowlensError, match="JSON-serialisable"):
        save_capture(c, tmp_path / "x.flcap")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_reduced_precision_within_bound(tmp_path, capture, precision, assert_captures_equal):
    path = save_capture(capture, tmp_path / f"{precision}.flcap", precision=precision)
    manifest = read_manifest(path)
    assert manifest["precision"] == precision
    assert manifest["max_abs_error"] <= ERROR_BOUND[precision]
    back = load_capture(path)
    assert_captures_equal(capture, back, atol=ERROR_BOUND[precision])
    worst = max(
        float(np.abs(p.probs - q.probs).max()) for p, q in zip(capture.passes, back.passes, strict=True)
    )
    assert worst == pytest.approx(manifest["max_abs_error"], abs=1e-7)


def test_missing_file(tmp_path):
    with pytest.raises(FlowlensError, match="does not exist"):
        load_capture(tmp_path / "nope.flcap")


def test_truncated_file(tmp_path, capture):
    path = save_capture(capture, tmp_path / "t.flcap")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FlowlensError, match=r"truncated or corrupt.*t\.flcap|t\.flcap.*truncated or corrupt"):
        load_capture(path)


def test_png_renamed(tmp_path):
    from PIL import Image

    p = tmp_path / "img.flcap"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p, format="PNG")
    with pytest.raises(FlowlensError, match="not a flowlens capture file.*zip"):
        load_capture(p)


def test_foreign_npz(tmp_path):
    p = tmp_path / "foreign.npz"
    np.savez(p, a=np.arange(3))
    with pytest.raises(FlowlensError, match="no '__manifest__'"):
        load_capture(p)


def _rewrite(path, manifest_edit=None, array_edit=None):
    with np.load(path, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    manifest = json.loads(members.pop("__manifest__").tobytes())
    if manifest_edit:
        manifest_edit(manifest)
    if array_edit:
        array_edit(members)
    cf.write_members(path, manifest, members, compress=False)


def test_wrong_version(tmp_path, capture):
    path = save_capture(capture, tmp_path / "v.flcap")
    _rewrite(path, manifest_edit=lambda m: m.update(format_version=99))
    with pytest.raises(FlowlensError, match="format_version 99"):
        load_capture(path)


def test_wrong_magic(tmp_path, capture):
    path = save_capture(capture, tmp_path / "v.flcap")
    _rewrite(path, manifest_edit=lambda m: m.update(magic="other"))
    with pytest.raises(FlowlensError, match="magic"):
        load_capture(path)


def test_tampered_array_checksum(tmp_path, capture):
    path = save_capture(capture, tmp_path / "c.flcap")

    def edit(members):
        a = members["pass1.probs"].copy()
        a[0, 0, 0, 0] += 1e-3
        members["pass1.probs"] = a

    _rewrite(path, array_edit=edit)
    with pytest.raises(FlowlensError, match=r"checksum mismatch.*pass1\.probs"):
        load_capture(path)


def test_flipped_byte_on_disk(tmp_path, capture):
    path = save_capture(capture, tmp_path / "f.flcap")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("pass0.probs.npy")
    data[info.header_offset + 200] ^= 0xFF  # inside the member's data
    path.write_bytes(bytes(data))
    with pytest.raises(FlowlensError, match=r"f\.flcap"):
        load_capture(path)


def test_object_array_never_unpickled(tmp_path, capture):
    path = save_capture(capture, tmp_path / "o.flcap")

    def edit(members):
        members["pass0.query_rows"] = np.array([object()], dtype=object)

    _rewrite(path, array_edit=edit)
    with pytest.raises(FlowlensError):
        load_capture(path)


def test_fused_and_row_subset_passes_round_trip(tmp_path, random_capture, assert_captures_equal):
    from flowlens.core.capture import AttentionPass, Capture

    c = random_capture(2)
    p = c.prefix
    sub = AttentionPass(
        p.kind,
        p.probs[:, :, ::2].mean(axis=1, keepdims=True),
        p.layers,
        p.query_rows[::2],
        head_reduction="mean",
    )
    c2 = Capture(c.layout, c.num_layers, c.num_heads, (sub, *c.steps), None, "m", {})
    assert_captures_equal(c2, load_capture(save_capture(c2, tmp_path / "s.flcap")))


def test_check_format_literal_messages():
    from flowlens.io.files import check_format

    ok = {"magic": "m", "format_version": 2}
    check_format(ok, key="magic", magic="m", version=2, what="thing", where="/a/b")
    with pytest.raises(FlowlensError) as e:
        check_format({"magic": "n"}, key="magic", magic="m", version=2, what="thing", where="/a/b")
    assert str(e.value) == "'/a/b' is not a flowlens thing (magic 'n', expected 'm')."
    for bad in (3, 0, "1", None):
        with pytest.raises(FlowlensError) as e:
            check_format({"magic": "m", "format_version": bad}, key="magic", magic="m", version=2, what="thing",
                         where="/a/b", fix="Do X.")
        assert str(e.value) == f"thing '/a/b' has format_version {bad!r}; this flowlens reads 1..2. Do X."
