"""Activation-patching sweeps: self-patching changes nothing, a total prefix patch reproduces the
source run, a sweep's site equals the hand-built model patch, bad sites get clear errors."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import causal_kit as ck  # noqa: E402

from flowlens.causal import PatchSite, patch_sites, patch_sweep  # noqa: E402
from flowlens.errors import FlowlensError  # noqa: E402
from flowlens.model import Patch, SamplerPatch, sample_patched  # noqa: E402

NAME = "test_tiny"


def test_sites_are_the_product():
    sites = patch_sites([0, 1], steps=["prefix", 2], tokens={"w": "words"})
    assert [(s.layer, s.step, s.token_label, s.site) for s in sites] == [
        (0, "prefix", "w", "residual"), (0, 2, "w", "residual"), (1, "prefix", "w", "residual"),
        (1, 2, "w", "residual")]
    heads = patch_sites([3], heads=[0, 5])
    assert [(s.head, s.site, s.token_label) for s in heads] == [(0, "head", "all"), (5, "head", "all")]
    assert PatchSite(4, tokens=[1, 2]).token_label == "1,2"


def _setup(name=NAME, frames=2):
    model, params = ck.kit.model(name), ck.kit.params(name)
    clean = [ck.frame(name, 0), ck.frame(name, 0, element=1)][:frames]
    corrupt = [ck.frame(name, 1), ck.frame(name, 1, element=1)][:frames]
    return model, params, clean, corrupt, ck.noise(name, frames)


@pytest.mark.slow
def test_patching_a_run_with_itself_changes_nothing():
    model, params, clean, _, noise = _setup()
    sites = patch_sites([0, 7, 18], steps=["prefix", 1], tokens={"all": None}) + \
        patch_sites([4], steps=[0], tokens={"actions": "actions"}, heads=[2])
    table = patch_sweep(model, params, clean, clean, sites, noise=noise, num_steps=ck.STEPS, batch_size=2)
    assert len(table) == 2 * len(sites)
    assert (table.l2 == 0).all() and table.gap_closed.isna().all()


@pytest.mark.slow
def test_total_prefix_patch_reproduces_the_source_run_on_pi05():
    # Pi0.5's suffix reads only the noise and the prefix's KV cache: patching every prefix token's
    # layer-0 input (the embeddings) from the corrupted run gives the corrupted chunk exactly.
    name = "test_tiny_pi05"
    model, params, clean, corrupt, noise = _setup(name)
    table = patch_sweep(model, params, clean, corrupt, [PatchSite(0, "prefix"), PatchSite(18, "prefix")],
                        noise=noise, num_steps=ck.STEPS)
    first, last = table[table.layer == 0], table[table.layer == 18]
    np.testing.assert_array_equal(first.gap_closed, 1.0)
    assert (first.l2 > 0).all()
    np.testing.assert_array_equal(last.l2, 0.0)  # the prefix's final output feeds nothing
    # into="corrupt" is the reverse direction: the clean embeddings give back the clean chunk
    back = patch_sweep(model, params, clean, corrupt, [PatchSite(0, "prefix")], into="corrupt", noise=noise,
                       num_steps=ck.STEPS)
    np.testing.assert_array_equal(back.gap_closed, 1.0)


@pytest.mark.slow
def test_a_sweep_site_equals_the_hand_built_patch():
    model, params, clean, corrupt, noise = _setup(frames=1)
    site = PatchSite(layer=6, step=1, tokens="actions", head=2)
    table = patch_sweep(model, params, clean, corrupt, [site], noise=noise, num_steps=ck.STEPS)
    base, _ = sample_patched(model, params, clean[0], noise=noise, num_steps=ck.STEPS)
    _, rec = sample_patched(model, params, corrupt[0], noise=noise, num_steps=ck.STEPS, record=True)
    lay = model.layout(clean[0], 0)
    where = np.zeros(rec.step_heads.shape[:5], bool)  # [steps, L, B, T_s, N]
    where[1, 6, 0, lay.select(group="actions") - lay.prefix_len, 2] = True
    got, _ = sample_patched(model, params, clean[0], noise=noise, num_steps=ck.STEPS,
                            patch=SamplerPatch(steps=Patch(head_where=where, heads=rec.step_heads)))
    want = np.linalg.norm((got - base).astype(np.float64))
    assert want > 0 and table.l2.iloc[0] == pytest.approx(want, rel=1e-6)
    assert (table.step == "1").all() and (table["head"] == 2).all() and (table.tokens == "actions").all()


@pytest.mark.slow
def test_bad_sites_and_inputs_name_the_fix():
    model, params, clean, corrupt, _ = _setup(frames=1)

    def run(sites, c=clean, k=corrupt, **kw):
        return patch_sweep(model, params, c, k, sites, num_steps=ck.STEPS, **kw)

    with pytest.raises(FlowlensError, match=r"sites\[0\].layer is 25, but the model has 18 layers"):
        run([PatchSite(25)])
    with pytest.raises(FlowlensError, match="head outputs exist in layers 0..L-1"):
        run([PatchSite(18, head=0)])
    with pytest.raises(FlowlensError, match=r"sites\[1\].step is 3, but sampling runs 3 denoising steps"):
        run([PatchSite(0), PatchSite(0, step=3)])
    with pytest.raises(FlowlensError, match="Did you mean 'words'"):
        run([PatchSite(0, tokens="word")])
    with pytest.raises(FlowlensError, match="selects no token of denoising step 0"):
        run([PatchSite(0, step=0, tokens="words")])
    other = [ck.frame(NAME, 1, element=1)]  # all cameras and a shorter prompt: another layout
    with pytest.raises(FlowlensError, match="selects different tokens in the clean and the corrupt layout"):
        run([PatchSite(0, tokens="words")], k=other)
    with pytest.raises(FlowlensError, match="clean has 1 frames and corrupt 2"):
        run([PatchSite(0)], k=corrupt * 2)
    with pytest.raises(FlowlensError, match="Did you mean 'clean'"):
        run([PatchSite(0)], into="clear")
