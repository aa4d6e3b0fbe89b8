"""Attribution methods beyond raw attention: norm-based, ALTI, value zeroing, flow over ALTI.

``decompose`` holds the per-layer math on plain arrays, ``passes`` turns a capture with the
residual stream into per-layer contribution matrices, ``methods`` is the registry the CLI,
the report and the faithfulness benchmark call (name → method, with what it needs).
"""

from flowlens.attribution.methods import METHODS, Attribution, Method, attribute, get_method, register
from flowlens.attribution.passes import KINDS, check_capture, contribution_capture

__all__ = ["KINDS", "METHODS", "Attribution", "Method", "attribute", "check_capture", "contribution_capture",
           "get_method", "register"]
