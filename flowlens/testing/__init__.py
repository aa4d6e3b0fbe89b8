"""Public test helpers: synthetic captures with the exact openpi layouts, for tests and notebooks."""

from flowlens.testing.synthetic import (
    MASK_VALUE as MASK_VALUE,
)
from flowlens.testing.synthetic import (
    capture_from_joint as capture_from_joint,
)
from flowlens.testing.synthetic import (
    joint_attention as joint_attention,
)
from flowlens.testing.synthetic import (
    masked_softmax as masked_softmax,
)
from flowlens.testing.synthetic import (
    synthetic_capture as synthetic_capture,
)
from flowlens.testing.synthetic import (
    toy_layout as toy_layout,
)

__all__ = ["MASK_VALUE", "capture_from_joint", "joint_attention", "masked_softmax", "synthetic_capture",
           "toy_layout"]
