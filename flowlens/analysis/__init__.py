"""Analyses: pure functions of TokenGraphs and Captures (rollout, flow, heads, actions, routing)."""
