"""Attribution methods beyond raw attention: norm-based, ALTI, value zeroing, flow over ALTI.

``decompose`` holds the per-layer math on plain arrays (JAX), ``passes`` turns a capture with the
residual stream into per-layer contribution matrices, ``methods`` is the registry the CLI, the
report and the faithfulness benchmark call (name → method, with what it needs). Importing the
package (or the registry) loads no JAX; ``contribution_capture`` / ``KINDS`` / ``check_capture``
import ``passes`` on first use.
"""

from flowlens._lazy import lazy_getattr
from flowlens.attribution.methods import (
    METHODS,
    Attribution,
    Method,
    attribute,
    get_method,
    query_spread,
    register,
)

__all__ = ["KINDS", "METHODS", "Attribution", "Method", "attribute", "check_capture", "contribution_capture",
           "get_method", "query_spread", "register"]
__getattr__ = lazy_getattr(__name__, {n: "flowlens.attribution.passes"
                                      for n in ("KINDS", "check_capture", "contribution_capture")}, globals())
