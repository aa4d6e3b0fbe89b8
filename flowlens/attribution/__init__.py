"""Attribution methods that need more of the model than the captured attention.

Gradient methods take what :mod:`flowlens.model.gradients` computes through the real sampler:
Chefer et al.'s gradient-weighted relevancy (:func:`chefer_relevancy`, from an
``AttentionGradients``) and Integrated Gradients on the prefix embeddings
(:func:`integrated_gradients`, from a ``PathGradients``). Both return token scores over the
layout, as rollout does; called without their gradients they say what to compute.
"""

from flowlens.attribution.integrated_gradients import IntegratedGradients, integrated_gradients
from flowlens.attribution.relevancy import Relevancy, chefer_relevancy, relevancy_rows

GRADIENT_METHODS = {"relevancy": "AttentionGradients", "ig": "PathGradients"}  # method → the record it needs

__all__ = ["GRADIENT_METHODS", "IntegratedGradients", "Relevancy", "chefer_relevancy", "integrated_gradients",
           "relevancy_rows"]
