"""Projection of token scores onto what a person looks at: camera frames and prompt words."""

from flowlens.projection.image import (
    camera_segment as camera_segment,
)
from flowlens.projection.image import (
    frame_heatmap as frame_heatmap,
)
from flowlens.projection.image import (
    model_heatmap as model_heatmap,
)
from flowlens.projection.image import (
    patch_grid as patch_grid,
)
from flowlens.projection.text import WordScores as WordScores
from flowlens.projection.text import word_scores as word_scores

__all__ = ["WordScores", "camera_segment", "frame_heatmap", "model_heatmap", "patch_grid", "word_scores"]
