# %% [markdown]
# # flowlens quickstart: rollout of Pi0's action tokens, on a synthetic capture
#
# A synthetic capture has the exact `pi0_libero` layout (3 cameras × 256 patches, the third one
# masked; 48 text tokens with padding; a state token; 50 action tokens) and openpi's pass
# structure (one prefix pass, 10 denoising steps). Swap it for a real capture from
# `flowlens.model` and nothing below changes.
#
# This file is a jupytext `py:percent` notebook; `tests/test_notebooks.py` executes it.

# %%
import numpy as np

import flowlens
from flowlens.testing import synthetic_capture

capture = synthetic_capture("pi0", num_layers=18, num_heads=8, num_steps=10, seed=0)
print(capture)
print(capture.layout)

# %% [markdown]
# ## The token graph of one denoising step
# Prefix rows come from the prefix pass, suffix rows from step 0's pass. Masked-camera and
# padding rows (uniform garbage out of openpi's softmax) are removed.

# %%
graph = flowlens.TokenGraph.from_capture(capture, step=0, heads="mean", residual=0.5)
print(graph.num_nodes, "valid tokens of", capture.layout.n)
names, shares = graph.segment_matrix(graph.num_layers - 1)
print(dict(zip(names, np.round(shares[names.index("actions")], 3))))

# %% [markdown]
# ## Rollout of the first action token, after every layer

# %%
result = flowlens.rollout(graph, "action:0")  # or token indices, or horizon=0
scores = result.token_scores()  # [token], NaN at removed tokens
words = flowlens.word_scores(scores, capture.layout)
print("top words:", words.ranking()[:3], "sinks:", words.specials)
grid = flowlens.patch_grid(scores, capture.layout, "base_0_rgb")
print("hottest base-camera patch (row, col):", np.unravel_index(np.nanargmax(grid), grid.shape))
print("object patches planted in the synthetic capture:",
      [divmod(p, 16) for p in capture.metadata["object_patches"]])

# Raw last-layer attention of the same query finds the planted patches directly; rollout mixes
# in every layer's image-to-image attention and the residual path, so it is smoother.
raw = graph.to_tokens(graph.attention[-1][graph.select(horizon=0)[0]])
raw_grid = flowlens.patch_grid(raw, capture.layout, "base_0_rgb")
print("top-4 raw last-layer patches:",
      sorted(divmod(int(i), 16) for i in np.argsort(-np.nan_to_num(raw_grid.ravel()))[:4]))

# %% [markdown]
# ## See it: the rollout on each camera and on the prompt's words (sinks apart), with statistics
# Pass `images={camera: frame}` to draw on the frames; a synthetic capture has none.

# %%
import matplotlib

matplotlib.use("Agg")
from flowlens.figures import FigureConfig, attention_combined_figure

fig = attention_combined_figure(scores[None], capture.layout, layer_ids=[graph.num_layers - 1],
                                config=FigureConfig(method="rollout", query="action a0"))
fig.savefig("quickstart_rollout.png", dpi=80)
print("wrote quickstart_rollout.png:", [ax.get_title() for ax in fig.axes if ax.get_title()])

# %% [markdown]
# ## Bring your own attention
# `attention_rollout` and `attention_flow` take `[layer, head, query, key]` (or head-fused
# `[layer, query, key]` for flow) from any model; `query=` takes token indices.

# %%
from flowlens.testing import joint_attention, toy_layout

layout = toy_layout()
attention = joint_attention(layout, num_layers=4, num_heads=2)
print(flowlens.attention_rollout(attention, query=layout.actions.indices, valid=layout.valid).shape)

# %% [markdown]
# ## Attention flow (exact max-flow), from the first action token to every prefix token
# `flow(graph, query, ...)` mirrors `rollout(graph, query, ...)`; sources and source sets are
# layout token indices. Values come with certified lower / upper bounds; `source_sets` gives the
# flow from whole groups (a camera, the prompt words) through a super-source.

# %%
groups = capture.layout.groups()
flow = flowlens.flow(graph, "action:0", sources=capture.layout.select(kind="image"),
                     source_sets={name: groups[name] for name in ("base_0_rgb", "words", "bos")})
print("max certified gap:", flow.max_gap, "group flows:",
      {k: round(float(v[0]), 3) for k, v in flow.set_values.items()})
