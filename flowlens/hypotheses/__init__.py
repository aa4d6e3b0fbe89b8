"""Hypotheses: a named per-frame statistic, a grouping and a test, over many frames / episodes.

Module map: ``evidence`` (what a statistic may ask of one frame: labels, capture, layout,
interventions), ``hypothesis`` (the ``Hypothesis`` and its per-frame values), ``evaluate`` (the test
table over frames), ``stats`` (bootstrap intervals, permutation tests, Holm / BH), ``measures``
(attention mass and rollout share between selections), ``runner`` (a hypothesis file over an
episode source, resumable: ``flowlens hypothesis``).

Interventions are a few lines of a statistic: ``ev.actions(knockouts)`` re-samples the frame with
attention edges removed and ``ev.patched(source, site)`` with one activation patched in from a
corrupted input's run (both on the clean run's noise, through ``flowlens.causal``). A patching
hypothesis — from which prefix layer on do the image tokens carry the named object? — patches the
cameras' residual from the same frame with a prompt naming another object, and tests the move of
the chunk towards that object (runs the model, so shown, not executed)::

    import numpy as np
    from flowlens.causal import PatchSite
    from flowlens.hypotheses import Hypothesis

    CAMERAS = "base_0_rgb | left_wrist_0_rgb"
    def towards_swap(ev, chunk):            # cosine of the chunk's heading to the swapped object
        d, h = ev.labels["swap_xy"] - ev.labels["gripper_xy"], chunk[:5, :2].sum(0)
        return float(d @ h / (np.linalg.norm(d) * np.linalg.norm(h)))
    def gain(ev, la):                       # patched minus clean, towards the swapped object
        patched = ev.patched(ev.labels["swapped"], PatchSite(la, tokens=CAMERAS))
        return towards_swap(ev, patched) - towards_swap(ev, ev.actions())
    CARRIES = Hypothesis("image tokens carry the named object from layer l", gain, null=0.0,
                         sweep=[0, 3, 6, 9, 12, 15, 18], alternative="greater")

``ev.labels["swapped"]`` is an ``Evidence`` of the same frame with the swapped prompt;
``prefetch_patched(evidences, sources, sites)`` runs all frames' patches batched first.
"""

from flowlens.hypotheses.evaluate import HypothesisResult as HypothesisResult
from flowlens.hypotheses.evaluate import correct as correct
from flowlens.hypotheses.evaluate import evaluate as evaluate
from flowlens.hypotheses.evaluate import summarize as summarize
from flowlens.hypotheses.evidence import Evidence as Evidence
from flowlens.hypotheses.evidence import prefetch_actions as prefetch_actions
from flowlens.hypotheses.evidence import prefetch_patched as prefetch_patched
from flowlens.hypotheses.hypothesis import Hypothesis as Hypothesis
from flowlens.hypotheses.hypothesis import frame_values as frame_values
from flowlens.hypotheses.measures import mass as mass
from flowlens.hypotheses.measures import rollout_share as rollout_share
from flowlens.hypotheses.runner import load_hypothesis_file as load_hypothesis_file
from flowlens.hypotheses.runner import run_hypothesis_file as run_hypothesis_file
from flowlens.hypotheses.stats import adjust as adjust
from flowlens.hypotheses.stats import benjamini_hochberg as benjamini_hochberg
from flowlens.hypotheses.stats import holm as holm
from flowlens.hypotheses.stats import one_sample as one_sample
from flowlens.hypotheses.stats import paired as paired
from flowlens.hypotheses.stats import two_sample as two_sample

__all__ = [
    "Evidence",
    "Hypothesis",
    "HypothesisResult",
    "adjust",
    "benjamini_hochberg",
    "correct",
    "evaluate",
    "frame_values",
    "holm",
    "load_hypothesis_file",
    "mass",
    "one_sample",
    "paired",
    "prefetch_actions",
    "prefetch_patched",
    "rollout_share",
    "run_hypothesis_file",
    "summarize",
    "two_sample",
]
