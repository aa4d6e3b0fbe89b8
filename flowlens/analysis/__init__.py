"""Analyses: pure functions of TokenGraphs and Captures (rollout, flow, heads, actions, steps).

Every public analysis is exported here and loaded on first use (``flowlens.analysis.flow``
compiles numba kernels, so ``import flowlens.analysis`` stays light). Module map: ``rollout``
(Abnar & Zuidema rollout), ``flow`` (attention flow, exact max-flow), ``heads`` (per-head
statistics and rankings), ``head_roles`` (head similarity and roles), ``head_grids`` (layers ×
heads grids), ``actions`` (action-to-action attention), ``step_rollout`` / ``steps`` (across
denoising steps), ``routing`` (attention / rollout mass between selections, a tidy table),
``paths`` (rollout split by the paths through a via selection). ``rollout`` and ``flow`` share
their names with modules here: take them from ``flowlens`` (or ``flowlens.analysis.rollout.rollout`` / ``flowlens.analysis.flow.flow``).
"""

from flowlens._lazy import lazy_getattr

# head_roles and head_grids name both a module and its function: importing the module (as any
# analysis does) would bind the *module* on this package, hiding the function from the lazy
# lookup. Both are numpy-only, so they are bound eagerly, after their modules.
from flowlens.analysis.head_grids import head_grids as head_grids
from flowlens.analysis.head_roles import head_roles as head_roles

_MODULES = {
    "flowlens.analysis.rollout": ("Rollout", "attention_rollout", "rollout_rows"),
    "flowlens.analysis.rows": ("action_group_mass", "read_rows"),
    "flowlens.analysis.routing": ("ROUTING_COLUMNS", "routing_table"),
    "flowlens.analysis.paths": ("PathShares", "path_breakdown", "path_split"),
    "flowlens.analysis.flow": ("FlowResult", "attention_flow"),
    "flowlens.analysis.heads": ("HeadAttention", "HeadRanking", "HeadStats", "head_attention", "head_stats",
                                "rank_heads"),
    "flowlens.analysis.head_roles": ("HeadRoles", "HeadSimilarity", "head_roles", "head_similarity"),
    "flowlens.analysis.head_grids": ("HeadGrid", "head_grids", "head_image_grid", "head_word_grid"),
    "flowlens.analysis.actions": ("ActionAttention", "ActionSummary", "action_attention", "action_rollout",
                                  "summarize_actions"),
    "flowlens.analysis.step_rollout": ("StepRollout", "rollout_all_steps"),
    "flowlens.analysis.steps": ("StepEvolution", "StepReport", "StepSeries", "action_attention_by_step",
                                "action_rollout_by_step", "by_step", "step_evolution", "step_report"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}


__getattr__ = lazy_getattr("flowlens.analysis", _HOME, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


__all__ = sorted(_HOME)
