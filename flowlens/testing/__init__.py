"""Public test helpers: synthetic captures with the exact openpi layouts, for tests and notebooks.

``structured_capture`` is flowlens's one generator of synthetic attention (also behind
``--checkpoint synthetic``); ``synthetic_capture`` wraps it for the LIBERO and toy layouts.
"""

from flowlens.testing.synthetic import MASK_VALUE as MASK_VALUE
from flowlens.testing.synthetic import capture_from_joint as capture_from_joint
from flowlens.testing.synthetic import joint_attention as joint_attention
from flowlens.testing.synthetic import masked_softmax as masked_softmax
from flowlens.testing.synthetic import structured_capture as structured_capture
from flowlens.testing.synthetic import synthetic_capture as synthetic_capture
from flowlens.testing.synthetic import synthetic_group_mass as synthetic_group_mass
from flowlens.testing.synthetic import toy_layout as toy_layout

__all__ = ["MASK_VALUE", "capture_from_joint", "joint_attention", "masked_softmax", "structured_capture",
           "synthetic_capture", "synthetic_group_mass", "toy_layout"]
