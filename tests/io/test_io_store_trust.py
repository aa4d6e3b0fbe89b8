"""A store trusts nothing it reads (issue 14, items 3, 4, 5, 11): paths from its files stay inside
it, links are not followed, crafted or foreign entries become ``problems`` and the rest stays
readable, store.json and keys are checked."""

import io
import json
import os

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.io.capture_file import save_capture
from flowlens.io.store import open_store


def _index(root):
    return json.loads((root / "index.json").read_text())


@pytest.mark.parametrize("target", ["../outside.flcap", "ABSOLUTE", "entries/k1.flcap"])
def test_index_paths_never_leave_the_store(tmp_path, random_capture, target):
    root = tmp_path / "s"
    store = open_store(root, policy="full")
    store.put("k0", random_capture(0))
    store.put("k1", random_capture(1))
    outside = save_capture(random_capture(5), tmp_path / "outside.flcap")
    index = _index(root)
    index["entries"][0]["file"] = str(outside) if target == "ABSOLUTE" else target
    same = target == "entries/k1.flcap"
    index["entries"][0]["bytes"] = index["entries"][1]["bytes"] if same else outside.stat().st_size
    (root / "index.json").write_text(json.dumps(index))
    (root / "entries" / "k0.flcap").unlink()  # (an intact unindexed file would be adopted)
    again = open_store(root, mode="r")
    assert again.keys() == ["k1"]
    assert [p.key for p in again.problems] == ["k0"] and "entries/k0.flcap" in again.problems[0].reason
    with pytest.raises(FlowlensError, match="entry 'k0' is damaged"):
        again.get("k0")


def test_symlinks_in_entries_are_not_adopted(tmp_path, random_capture):
    root = tmp_path / "s"
    store = open_store(root, policy="full")
    store.put("k0", random_capture(0))
    outside = save_capture(random_capture(5), tmp_path / "elsewhere" / "x.flcap")
    os.symlink(outside, root / "entries" / "evil.flcap")
    again = open_store(root, mode="r")
    assert again.keys() == ["k0"]
    assert [(p.key, p.reason) for p in again.problems] == [
        ("evil", "unindexed symbolic link; links are never adopted")
    ]
    index = _index(root)  # ... nor followed when the index names one
    index["entries"].append({**index["entries"][0], "key": "evil", "file": "entries/evil.flcap",
                             "bytes": outside.stat().st_size})
    (root / "index.json").write_text(json.dumps(index))
    again = open_store(root, mode="r")
    assert again.keys() == ["k0"] and "symbolic link" in again.problems[0].reason


def test_crafted_entry_is_a_problem_not_a_broken_store(tmp_path, random_capture):
    root = tmp_path / "s"
    store = open_store(root, policy="full")
    store.put("k0", random_capture(0))
    good = (root / "entries" / "k0.flcap").read_bytes()
    # an entry whose pass0.probs header declares 256 GiB: numpy would allocate before any check
    with np.load(io.BytesIO(good)) as npz:
        members = {k: npz[k] for k in npz.files}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**18, 2**18)})
    import zipfile

    with zipfile.ZipFile(root / "entries" / "huge.flcap", "w") as z:
        for k, v in members.items():
            buf = io.BytesIO()
            np.save(buf, v)
            z.writestr(f"{k}.npy", buf.getvalue() if k != "pass0.probs" else header.getvalue() + b"\0" * 8)
    for mode in ("r", "a"):
        again = open_store(root, mode=mode)
        assert again.keys() == ["k0"] and again.get("k0").num_layers == 3
        assert [p.key for p in again.problems] == ["huge"]
        assert "shape [262144, 262144]" in again.problems[0].reason


@pytest.mark.parametrize(("kind", "value"), [("precision", "float32"), ("policy", "full")])
def test_foreign_precision_or_policy_is_not_adopted(tmp_path, random_capture, kind, value):
    root = tmp_path / "s"
    store = open_store(root, policy="rows_for_rollout", precision="float16")
    store.put("k0", random_capture(0))
    other = open_store(tmp_path / "o", policy="full" if kind == "policy" else "rows_for_rollout",
                       precision="float16" if kind == "policy" else "float32")
    other.put("k1", random_capture(1))
    (root / "entries" / "k1.flcap").write_bytes((tmp_path / "o" / "entries" / "k1.flcap").read_bytes())
    again = open_store(root, mode="r")
    assert again.keys() == ["k0"]
    assert [p.key for p in again.problems] == ["k1"]
    assert f"has {kind} {value!r}, but the store's is" in again.problems[0].reason
    # a file of the same name swapped in after opening is refused by get() too
    (root / "entries" / "k0.flcap").write_bytes((tmp_path / "o" / "entries" / "k1.flcap").read_bytes())
    index = _index(root)
    index["entries"][0]["bytes"] = (root / "entries" / "k0.flcap").stat().st_size
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(FlowlensError, match=f"has {kind} {value!r}"):
        open_store(root, mode="r").get("k0")


def test_long_key_and_incomplete_config_are_flowlens_errors(tmp_path, random_capture):
    store = open_store(tmp_path / "s", policy="full")
    with pytest.raises(FlowlensError, match=r"key must be at most 200 characters .*got 300"):
        store.put("k" * 300, random_capture(0))
    store.put("k" * 200, random_capture(0))
    assert open_store(tmp_path / "s", mode="r").keys() == ["k" * 200]
    cfg_path = tmp_path / "s" / "store.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["policy"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(FlowlensError, match=r"store.json' has no 'policy'; a store config holds policy"):
        open_store(tmp_path / "s", mode="r")
    cfg_path.write_text(json.dumps({**cfg, "policy": "full", "precision": "float8"}))
    with pytest.raises(FlowlensError, match=r"has precision='float8'"):
        open_store(tmp_path / "s")


def test_format_1_entries_of_an_existing_store_stay_readable(tmp_path, random_capture, assert_captures_equal):
    from flowlens.io.capture_file import write_members

    root = tmp_path / "s"
    store = open_store(root, policy="full")
    cap = random_capture(0)
    store.put("k0", cap)
    path = root / "entries" / "k0.flcap"
    with np.load(path, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    manifest = json.loads(members.pop("__manifest__").tobytes())
    old = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "policy")} | {"format_version": 1}
    write_members(path, old, members, compress=False)
    index = _index(root)
    index["entries"][0]["bytes"] = path.stat().st_size
    (root / "index.json").write_text(json.dumps(index))
    assert_captures_equal(cap, open_store(root, mode="r").get("k0"))
