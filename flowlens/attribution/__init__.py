"""Attribution methods that need more of the model than the captured attention.

Value-based methods read the residual stream (``CaptureConfig(residual=True)``) and the weights:
``decompose`` holds the per-layer math on plain arrays (norm-based, ALTI, value zeroing), ``passes``
turns such a capture into per-layer contribution matrices, ``methods`` is the registry the CLI and
the report call (a read-only name → method mapping, with what each needs; norm, alti, value_zeroing,
alti_flow, relevancy, ig — the last two through ``gradient_methods``, from the run's noise).
Gradient methods take what :mod:`flowlens.model.gradients` computes through the real sampler:
Chefer et al.'s gradient-weighted relevancy (:func:`chefer_relevancy`, from an
``AttentionGradients``) and Integrated Gradients on the prefix embeddings
(:func:`integrated_gradients`, from a ``PathGradients``). All return token scores over the layout,
as rollout does; called without what they need they say what to compute. Importing the package
loads no JAX; ``contribution_capture`` / ``KINDS`` / ``check_capture`` import ``passes`` on first use.
"""

from flowlens._lazy import lazy_getattr
from flowlens.attribution.integrated_gradients import IntegratedGradients, integrated_gradients
from flowlens.attribution.methods import (
    METHODS,
    Attribution,
    Method,
    attribute,
    get_method,
    query_spread,
)
from flowlens.attribution.relevancy import Relevancy, chefer_relevancy, relevancy_rows

GRADIENT_METHODS = {"relevancy": "AttentionGradients", "ig": "PathGradients"}  # method → the record it needs

__all__ = ["GRADIENT_METHODS", "KINDS", "METHODS", "Attribution", "IntegratedGradients", "Method", "Relevancy",
           "attribute", "check_capture", "chefer_relevancy", "contribution_capture", "get_method",
           "integrated_gradients", "query_spread", "relevancy_rows"]
__getattr__ = lazy_getattr(__name__, {n: "flowlens.attribution.passes"
                                      for n in ("KINDS", "check_capture", "contribution_capture")}, globals())
