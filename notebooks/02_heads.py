# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Heads: what each of the 18 × 8 attention heads reads, and how that changes over denoising
#
# A head-averaged map hides a lot: one head may read the prompt while its neighbour reads the
# wrist camera. This notebook keeps every head and asks four questions of one frame of the embedded
# model `builtin:tabletop`:
#
# 1. What does each head of the action tokens attend to? (per-head grids over a camera and the words)
# 2. Which heads do the same job? (roles from group mass, and Jensen–Shannon similarity)
# 3. How do the 10 action tokens of one chunk attend to one another? (action → action)
# 4. What changes over the 10 flow-matching denoising steps? (step evolution)
#
# All numbers here are *raw attention*: probabilities a head put on keys. They say where a head
# reads from. They do not say whether the policy needs that read; notebook 3 tests that.

# %%
import matplotlib.pyplot as plt
import numpy as np

from flowlens.analysis import action_attention, head_grids, head_roles, head_similarity, head_stats, step_report
from flowlens.io import open_episode
from flowlens.pipeline import CaptureNeeds, load_backend
from flowlens.tasks.tabletop import run_expert, sample_scene, write_episode_dir

backend = load_backend("builtin:tabletop")
episode = open_episode(write_episode_dir(run_expert(sample_scene(1_000_004)), "episode_1000004"))
frame = episode.frame(4)
# every head (all_heads) and every denoising step, prefix pass included
capture = backend.capture(frame, CaptureNeeds(steps=tuple(range(backend.num_steps)), all_heads=True))
layout = capture.layout
print(repr(frame.prompt), "·", capture)

# %% [markdown]
# ## 1. Per-head grids
# One panel per (layer, head): the action tokens' attention over the base camera, on one colour
# scale for the whole grid (`scale="grid"`), so a dim panel is a head that reads little from that
# camera. Six layers are shown to keep the figure small; `head_grids` computes all 18.

# %%
from flowlens.figures import head_stats_grid

stats = head_stats(capture, step=backend.num_steps - 1, layers=[0, 3, 7, 11, 14, 17])
fig = head_stats_grid(stats, camera="base_0_rgb", image=frame.images["base_0_rgb"])
plt.show()

# %%
grids = head_grids(capture, step=backend.num_steps - 1)
for name, grid in grids.items():
    print(f"{name:18s} values {grid.values.shape} · colour limits {tuple(round(v, 3) for v in grid.limits())}")

# %% [markdown]
# ## 2. Head roles and similarity
# `head_roles` describes every head by the share of its mass on each role (sinks, each camera,
# the words, the other action tokens). It then clusters heads with similar profiles. The map below
# colours each (layer, head) by its cluster.

# %%
roles = head_roles(capture, step=backend.num_steps - 1, threshold=0.25)
print("clusters:", {name: len(roles.members(name)) for name in roles.cluster_names})

fig, ax = plt.subplots(figsize=(4.5, 5))
im = ax.imshow(roles.labels, cmap="tab10", vmin=0, vmax=9, aspect="auto")
ax.set_xlabel("head")
ax.set_ylabel("layer")
ax.set_title("head role clusters")
handles = [plt.Rectangle((0, 0), 1, 1, color=im.cmap(im.norm(i))) for i in range(len(roles.cluster_names))]
ax.legend(handles, roles.cluster_names, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
plt.show()

# %% [markdown]
# `head_similarity` compares every pair of heads' attention maps (Jensen–Shannon divergence,
# 0 = identical, ln 2 = disjoint). Its blocks along the diagonal are the heads of one layer. Low
# values within a layer mean redundant heads; a bright row is a head unlike any other.

# %%
sim = head_similarity(capture, step=backend.num_steps - 1)
print("mean within-layer divergence, first / last layer:", np.round(sim.layer_diversity()[[0, -1]], 3))
fig, ax = plt.subplots(figsize=(5, 4.2))
im = ax.imshow(sim.matrix, cmap="magma")
ax.set_title("Jensen–Shannon divergence, layer-major heads")
fig.colorbar(im, ax=ax, label="nats")
plt.show()

# %% [markdown]
# ## 3. Action → action attention
# Each panel is the horizon × horizon attention of the chunk's action tokens to each other (query
# row, key column), averaged over heads. Action tokens attend to each other bidirectionally in
# openpi. A band near the diagonal means each action reads its neighbours in time.

# %%
from flowlens.figures import action_attention_grid

actions = action_attention(capture, step=backend.num_steps - 1, layers=[0, 6, 12, 17])
print("values:", actions.values.shape, "(layer, head, horizon, horizon)")
fig = action_attention_grid(actions)
plt.show()

# %% [markdown]
# ## 4. Denoising-step evolution
# A Pi0 chunk is refined over 10 flow-matching steps, from noise (t = 1) to the action (t ≈ 0).
# The prefix (images and prompt) is computed once, so only the action tokens' rows can change.
# `step_report` measures how much they change, as the total-variation distance between
# consecutive steps.

# %%
report = step_report(capture)
print({k: {kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in v.items()}
       for k, v in report.summary().items()})
print("heads whose map changes most (layer position, head, mean TV):",
      [(layer, head, round(tv, 3)) for layer, head, tv in report.most_changing_heads(3)])

fig, ax = plt.subplots(figsize=(7, 3))
shares = report.attention_shares[:, -1]  # [step, group] at the last layer
for g, name in enumerate(report.groups):
    ax.plot(report.steps, shares[:, g], marker=".", label=name)
ax.set_xlabel("denoising step")
ax.set_ylabel("last-layer attention share")
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
plt.show()
