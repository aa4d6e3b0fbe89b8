"""Attention flow (Abnar & Zuidema 2020): exact max-flow through the layered attention graph.

Modules:
  capacities: head fusion, valid-token masking, residual → float64 capacities [layer, n, n].
  solver: the exact float64 max-flow engine for layered dense capacity matrices (numba).
  api: the public functions (``flow`` on a TokenGraph, ``attention_flow`` on arrays) and FlowResult.
"""

from flowlens.analysis.flow.api import FlowResult as FlowResult
from flowlens.analysis.flow.api import attention_flow as attention_flow
from flowlens.analysis.flow.api import flow as flow
from flowlens.analysis.flow.capacities import flow_capacities as flow_capacities
from flowlens.analysis.flow.capacities import fuse_heads as fuse_heads
from flowlens.analysis.flow.solver import max_flows as max_flows

__all__ = [
    "FlowResult",
    "attention_flow",
    "flow",
    "flow_capacities",
    "fuse_heads",
    "max_flows",
]
