"""Projection of token scores onto what a person looks at: camera frames and prompt words."""

from flowlens.projection.image import (
    camera_segment as camera_segment,
    frame_heatmap as frame_heatmap,
    model_heatmap as model_heatmap,
    patch_grid as patch_grid,
)
from flowlens.projection.text import WordScores as WordScores, word_scores as word_scores
