import json

import numpy as np
import pytest

from flowlens.core.capture import PassKind
from flowlens.core.openpi_layout import pi0_layout
from flowlens.errors import FlowlensError
from flowlens.io.precision import ERROR_BOUND, PRECISIONS
from flowlens.io.store import POLICIES, apply_policy, frame_key, open_store, policy_bytes


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("policy", POLICIES)
def test_round_trip_each_policy_and_precision(
    tmp_path, policy, precision, random_capture, assert_captures_equal
):
    store = open_store(tmp_path / "s", policy=policy, precision=precision)
    caps = [random_capture(i, metadata={"frame": i}) for i in range(3)]
    for i, c in enumerate(caps):
        info = store.put(frame_key("ep 0", i), c)
        assert info.max_abs_error <= ERROR_BOUND[precision]
    assert store.max_abs_error <= store.error_bound == ERROR_BOUND[precision]
    again = open_store(tmp_path / "s", mode="r")
    assert again.keys() == [f"ep_0__f{i:06d}" for i in range(3)]
    assert again.problems == []
    for i, c in enumerate(caps):
        back = again.get(frame_key("ep 0", i))
        want = apply_policy(c, policy)
        assert_captures_equal(want, back, atol=ERROR_BOUND[precision])
        if precision != "float32":
            err = max(
                float(np.abs(p.probs - q.probs).max()) for p, q in zip(want.passes, back.passes, strict=True)
            )
            assert 0 < err <= again.info(frame_key("ep 0", i)).max_abs_error + 1e-7
    assert again.verify() == []


def test_policies_keep_the_right_rows(random_capture):
    c = random_capture(0, num_heads=3)
    layout = c.layout
    fused = apply_policy(c, "fused")
    assert all(p.num_heads == 1 and p.head_reduction == "mean" for p in fused.passes)
    np.testing.assert_allclose(fused.prefix.probs[:, 0], c.prefix.probs.mean(1), rtol=1e-6)
    roll = apply_policy(c, "rows_for_rollout")
    assert layout.valid[roll.prefix.query_rows].all()
    assert set(roll.prefix.query_rows) == set(np.flatnonzero(layout.valid[: layout.prefix_len]))
    assert set(roll.step(0).query_rows) == set(range(layout.prefix_len, layout.n))
    act = apply_policy(c, "action_rows")
    assert [p.kind for p in act.passes] == [PassKind.SUFFIX] * 2
    assert list(act.step(1).query_rows) == list(range(layout.actions.start, layout.actions.stop))
    np.testing.assert_allclose(act.step(1).probs[:, 0], c.step(1).probs[:, :, 1:].mean(1), rtol=1e-6)


def test_policy_bytes_matches_stored_arrays(random_capture):
    c = random_capture(0, num_heads=3, num_steps=2)
    for policy in POLICIES:
        r = apply_policy(c, policy)
        assert policy_bytes(c.layout, num_layers=3, num_heads=3, num_steps=2, policy=policy) == r.nbytes


def test_pi0_bytes_per_frame_documented():
    layout = pi0_layout()
    mb = {p: policy_bytes(layout, num_layers=18, num_heads=8, num_steps=10, policy=p) / 1e6 for p in POLICIES}
    assert mb["full"] == pytest.approx(638.2, abs=0.05)
    assert mb["fused"] == pytest.approx(79.8, abs=0.05)
    assert mb["rows_for_rollout"] == pytest.approx(62.7, abs=0.05)
    assert mb["action_rows"] == pytest.approx(31.2, abs=0.05)


def test_bad_input_never_loses_stored_frames(tmp_path, random_capture):
    store = open_store(tmp_path / "s", policy="action_rows")
    store.put("a", random_capture(0))
    before = (tmp_path / "s" / "entries" / "a.flcap").read_bytes()
    no_steps = random_capture(1, num_steps=0)
    with pytest.raises(FlowlensError, match="action query rows"):
        store.put("b", no_steps)
    with pytest.raises(FlowlensError, match="Capture"):
        store.put("b", "not a capture")
    with pytest.raises(FlowlensError, match="already holds 'a'"):
        store.put("a", random_capture(2))
    with pytest.raises(FlowlensError, match="key must be"):
        store.put("../evil", random_capture(2))
    assert (tmp_path / "s" / "entries" / "a.flcap").read_bytes() == before
    assert open_store(tmp_path / "s").keys() == ["a"]


def test_truncated_entry_reported_kept_and_recomputed(tmp_path, random_capture):
    store = open_store(tmp_path / "s", policy="fused")
    for i in range(3):
        store.put(f"k{i}", random_capture(i))
    victim = tmp_path / "s" / "entries" / "k1.flcap"
    data = victim.read_bytes()
    victim.write_bytes(data[:-100])
    again = open_store(tmp_path / "s")
    assert again.keys() == ["k0", "k2"]
    assert [p.key for p in again.problems] == ["k1"] and "truncated" in again.problems[0].reason
    with pytest.raises(FlowlensError, match="damaged"):
        again.get("k1")
    again.put("k1", random_capture(1))
    assert (tmp_path / "s" / "entries" / "k1.flcap.corrupt-0").read_bytes() == data[:-100]
    assert sorted(open_store(tmp_path / "s").keys()) == ["k0", "k1", "k2"]


def test_silent_corruption_found_by_verify(tmp_path, random_capture):
    store = open_store(tmp_path / "s", policy="action_rows")
    store.put("k0", random_capture(0))
    path = tmp_path / "s" / "entries" / "k0.flcap"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    again = open_store(tmp_path / "s")
    assert again.keys() == ["k0"]  # same size: only a deep check sees it
    assert [p.key for p in again.verify()] == ["k0"]
    assert path.exists()


def test_crash_between_entry_and_index_is_adopted(tmp_path, random_capture):
    store = open_store(tmp_path / "s", policy="action_rows")
    store.put("k0", random_capture(0))
    index = (tmp_path / "s" / "index.json").read_text()
    store.put("k1", random_capture(1))
    (tmp_path / "s" / "index.json").write_text(index)  # as if the crash fell before the index update
    (tmp_path / "s" / "entries" / ".k2.flcap.tmp-abc").write_bytes(b"PK\x03\x04 half")  # frame in flight
    again = open_store(tmp_path / "s")
    assert again.keys() == ["k0", "k1"] and again.problems == []
    assert not (tmp_path / "s" / "entries" / ".k2.flcap.tmp-abc").exists()
    assert [e["key"] for e in json.loads((tmp_path / "s" / "index.json").read_text())["entries"]] == [
        "k0",
        "k1",
    ]


def test_open_errors(tmp_path, random_capture):
    open_store(tmp_path / "s", policy="fused", precision="float16")
    with pytest.raises(FlowlensError, match="policy='fused'"):
        open_store(tmp_path / "s", policy="full")
    with pytest.raises(FlowlensError, match="Did you mean 'fused'"):
        open_store(tmp_path / "t", policy="fusd")
    with pytest.raises(FlowlensError, match="not a flowlens capture store"):
        open_store(tmp_path / "none", mode="r")
    cfg_path = tmp_path / "s" / "store.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "format_version": 0}))
    with pytest.raises(FlowlensError, match=r"store config .* has format_version 0; this flowlens reads 1\.\.1"):
        open_store(tmp_path / "s", mode="r")
    cfg_path.write_text(json.dumps({**cfg, "magic": "x"}))
    with pytest.raises(FlowlensError, match="is not a flowlens store config \\(magic 'x'"):
        open_store(tmp_path / "s", mode="r")
    cfg_path.write_text(json.dumps(cfg))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("user data")
    with pytest.raises(FlowlensError, match="non-empty folder"):
        open_store(tmp_path / "busy")
    ro = open_store(tmp_path / "s", mode="r")
    with pytest.raises(FlowlensError, match="read-only"):
        ro.put("x", random_capture(0))
    with pytest.raises(FlowlensError, match="no entry 'x'"):
        ro.get("x")


def test_small_layout_is_small(small_layout):
    assert small_layout().n == 25
