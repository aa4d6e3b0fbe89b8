"""Evidence.patched: activation patches from a corrupted input (a swapped prompt) share the clean run's noise."""

import numpy as np
import pytest

from flowlens import FlowlensError
from flowlens.causal import PatchSite
from flowlens.hypotheses import Evidence, prefetch_patched


@pytest.fixture(scope="module")
def pairs():
    """(backend, [(key, clean obs, swapped-prompt obs)]) for 3 held-out frames with a swap object."""
    from flowlens.causal import swapped_prompt
    from flowlens.pipeline.backends import load_backend
    from flowlens.tasks.tabletop.evaluate import held_out_cases
    from flowlens.tasks.tabletop.policy import observe

    backend = load_backend("builtin:tabletop")
    cfg = backend.config
    out = []
    for case in [c for c in held_out_cases(8) if c.swap >= 0][:3]:
        views = case.episode.render_frame(case.t)
        cams = {c: views[c][0] for c in cfg.cameras}
        st = case.episode.states[case.t]
        clean = observe(cams, case.scene.prompt, st, backend.tokenizer, cfg, backend.norm_stats)
        swapped = observe(cams, swapped_prompt(case), st, backend.tokenizer, cfg,
                          backend.norm_stats)
        out.append((f"s{case.scene.seed}", clean, swapped))
    return backend, out


def make(pairs):
    backend, items = pairs
    clean = [Evidence(k, backend, observation=c, stream=i) for i, (k, c, _) in enumerate(items)]
    swapped = [Evidence(k + "/swap", backend, observation=s, stream=i) for i, (k, _, s) in enumerate(items)]
    return clean, swapped


def test_patching_a_frame_with_itself_changes_nothing(pairs):
    clean, _ = make(pairs)
    twin = Evidence("twin", pairs[0], observation=clean[0].observation, stream=0)
    out = clean[0].patched(twin, PatchSite(layer=9, tokens="base_0_rgb | words"))
    np.testing.assert_allclose(out, clean[0].actions(), atol=1e-5)


def test_patching_every_prefix_token_at_layer_0_reproduces_the_swapped_run(pairs):
    clean, swapped = make(pairs)
    everything = PatchSite(layer=0, step="prefix", tokens=None)
    out = clean[0].patched(swapped[0], everything)
    np.testing.assert_allclose(out, swapped[0].actions(), atol=1e-4)
    assert np.abs(swapped[0].actions() - clean[0].actions()).max() > 1e-2  # the prompt swap matters
    # image tokens at layer 0 have not read the prompt yet: patching them from the swapped run is a no-op
    images = clean[0].patched(swapped[0], PatchSite(layer=0, tokens=["base_0_rgb", "left_wrist_0_rgb"]))
    np.testing.assert_allclose(images, clean[0].actions(), atol=1e-5)


def test_batched_prefetch_matches_frame_by_frame(pairs):
    (one, one_src), (many, many_src) = make(pairs), make(pairs)
    sites = [PatchSite(layer=6, tokens="base_0_rgb"), PatchSite(layer=12, tokens="words")]
    assert prefetch_patched(many, many_src, sites, batch_size=2) == 3
    assert prefetch_patched(many, many_src, sites, batch_size=2) == 0  # cached
    for a, sa, b, sb in zip(one, one_src, many, many_src, strict=True):
        for site in sites:
            np.testing.assert_allclose(b.patched(sb, site), a.patched(sa, site), atol=2e-4)


def test_bad_patch_requests_name_the_argument(pairs):
    clean, swapped = make(pairs)
    with pytest.raises(FlowlensError, match="site must be a flowlens.causal.PatchSite"):
        clean[0].patched(swapped[0], 9)
    with pytest.raises(FlowlensError, match="source must be an Evidence"):
        clean[0].patched(swapped[0].observation, PatchSite(layer=9))
    with pytest.raises(FlowlensError, match="evidences has 3 frames and sources 1"):
        prefetch_patched(clean, swapped[:1], [PatchSite(layer=9)])


def test_swapped_prompt_names_the_swap_object_in_the_scenes_own_words():
    from flowlens.causal import swapped_prompt
    from flowlens.tasks.tabletop.evaluate import held_out_cases

    case = [c for c in held_out_cases(8) if c.swap >= 0][0]
    new = swapped_prompt(case)
    old_name, new_name = case.scene.objects[case.scene.source].name, case.scene.objects[case.swap].name
    assert new == case.scene.prompt.replace(old_name, new_name) and new != case.scene.prompt
