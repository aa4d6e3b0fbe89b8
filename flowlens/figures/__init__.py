"""Figures: matplotlib renderings of flowlens results (numpy arrays + TokenLayout in, axes out).

Axes-level functions take computed arrays (token scores ``[..., token]`` over a TokenLayout,
grids, matrices), accept ``ax=None`` and return the axes; grid-shaped figures return the figure.
Nothing here imports JAX. Import explicitly: ``import flowlens.figures as ff``.

Module map: ``image`` (overlays per camera), ``text`` (word bars, layers × words, highlighted
prompt), ``evolution`` (group shares across layers), ``strips`` (heatmaps across layers),
``heads`` (layers × heads grids), ``actions`` (horizon × horizon), ``steps`` (denoising steps),
``compare`` (success vs failure), ``hypotheses`` (hypothesis test tables), ``composers`` (the legacy multi-panel PNGs), ``views`` (the
steps / heads / actions views of one frame, the success-vs-failure page), ``adapters``
(analysis records → figures), ``video``
(MP4 / GIF), ``save`` (atomic writes), ``config`` (FigureConfig).
"""

from flowlens.figures.actions import action_columns as action_columns
from flowlens.figures.actions import action_matrix as action_matrix
from flowlens.figures.actions import action_matrix_grid as action_matrix_grid
from flowlens.figures.adapters import action_attention_grid as action_attention_grid
from flowlens.figures.adapters import head_stats_grid as head_stats_grid
from flowlens.figures.adapters import rollout_strip as rollout_strip
from flowlens.figures.adapters import step_rollout_strip as step_rollout_strip
from flowlens.figures._common import check_image as check_image
from flowlens.figures.compare import compare_outcomes as compare_outcomes
from flowlens.figures.composers import attention_combined_figure as attention_combined_figure
from flowlens.figures.composers import attention_evolution_figure as attention_evolution_figure
from flowlens.figures.composers import attention_image_figure as attention_image_figure
from flowlens.figures.composers import attention_text_figure as attention_text_figure
from flowlens.figures.composers import write_figures as write_figures
from flowlens.figures.config import LEGACY_VIZ_TYPES as LEGACY_VIZ_TYPES
from flowlens.figures.config import VIZ_TYPES as VIZ_TYPES
from flowlens.figures.config import FigureConfig as FigureConfig
from flowlens.figures.evolution import group_shares as group_shares
from flowlens.figures.evolution import share_evolution as share_evolution
from flowlens.figures.heads import head_grid as head_grid
from flowlens.figures.heads import head_statistic as head_statistic
from flowlens.figures.heads import head_word_grid as head_word_grid
from flowlens.figures.hypotheses import hypothesis_figure as hypothesis_figure
from flowlens.figures.image import camera_overlay as camera_overlay
from flowlens.figures.image import image_overlay as image_overlay
from flowlens.figures.save import atomic_path as atomic_path
from flowlens.figures.save import save_figure as save_figure
from flowlens.figures.steps import step_share_evolution as step_share_evolution
from flowlens.figures.steps import step_strip as step_strip
from flowlens.figures.strips import layer_strip as layer_strip
from flowlens.figures.text import highlighted_text as highlighted_text
from flowlens.figures.text import word_bars as word_bars
from flowlens.figures.text import word_layer_heatmap as word_layer_heatmap
from flowlens.figures.video import attention_video as attention_video
from flowlens.figures.views import actions_figure as actions_figure
from flowlens.figures.views import first_camera as first_camera
from flowlens.figures.views import heads_figure as heads_figure
from flowlens.figures.views import outcome_figure as outcome_figure
from flowlens.figures.views import steps_figure as steps_figure
from flowlens.figures.video import overlay_frame as overlay_frame
from flowlens.figures.video import write_video as write_video

__all__ = [
    "LEGACY_VIZ_TYPES",
    "VIZ_TYPES",
    "FigureConfig",
    "actions_figure",
    "check_image",
    "first_camera",
    "heads_figure",
    "outcome_figure",
    "steps_figure",
    "action_attention_grid",
    "action_columns",
    "action_matrix",
    "action_matrix_grid",
    "atomic_path",
    "attention_video",
    "head_stats_grid",
    "rollout_strip",
    "step_rollout_strip",
    "attention_combined_figure",
    "attention_evolution_figure",
    "attention_image_figure",
    "attention_text_figure",
    "camera_overlay",
    "compare_outcomes",
    "group_shares",
    "head_grid",
    "head_statistic",
    "head_word_grid",
    "highlighted_text",
    "hypothesis_figure",
    "image_overlay",
    "layer_strip",
    "overlay_frame",
    "save_figure",
    "share_evolution",
    "step_share_evolution",
    "step_strip",
    "word_bars",
    "word_layer_heatmap",
    "write_figures",
    "write_video",
]
