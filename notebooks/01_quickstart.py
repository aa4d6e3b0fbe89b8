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
# # flowlens quickstart: where do the action tokens of a trained policy look?
#
# This notebook runs the embedded model `builtin:tabletop` on one camera frame. The model is a tiny
# Pi0.5 with the real architecture: 18 layers, 8 query heads and flow-matching denoising steps. It
# was trained on a synthetic tabletop task: a prompt such as "put the red cube on the blue plate",
# a base camera and a wrist camera. flowlens records the attention *while the model runs*. Then it
#
# 1. builds the token graph of one denoising step,
# 2. rolls the attention of the first action token out through all 18 layers,
# 3. projects the result onto both camera frames and onto the prompt's words,
# 4. writes the interactive HTML report.
#
# Everything runs on a CPU in well under a minute. The same code runs on a real Pi0 checkpoint;
# see notebook 5.

# %%
import jax
import matplotlib.pyplot as plt
import numpy as np

import flowlens
from flowlens.model import CaptureConfig, Pi0Model, make_observation, sample_actions
from flowlens.tasks.tabletop import load_builtin, load_builtin_norm_stats, run_expert, sample_scene

config, params, tokenizer = load_builtin("tabletop")
norm_stats = load_builtin_norm_stats("tabletop")
model = Pi0Model(config)
print(f"{config.num_layers} layers × {config.num_heads} heads, {config.num_steps} denoising steps, "
      f"cameras {config.cameras}")

# %% [markdown]
# ## One frame of a held-out scene
# The task's scripted expert gives an episode; we take a frame of the *reach* phase, where the
# gripper is still on its way to the object the prompt names. The scene seed lies above the
# training seeds, so the model has never seen this scene.

# %%
scene = sample_scene(1_000_004)
episode = run_expert(scene)
t = episode.phases.index("reach") + 2
frames = {camera: episode.frames[camera][t] for camera in config.cameras}
print("prompt:", repr(scene.prompt), "· frame", t, "of", episode.num_frames)

fig, axes = plt.subplots(1, len(frames), figsize=(6, 3))
for ax, (camera, rgb) in zip(axes, frames.items()):
    ax.imshow(rgb)
    ax.set_title(camera)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Run the model and record its attention
# `CaptureConfig()` records everything: the prefix pass (images and prompt) and every denoising
# step, all layers and heads, in float32. `sample_actions` returns the action chunk and the
# `Capture`.

# %%
# discrete_state=False: the prompt in Pi0's format, as the model was trained (no state in the prompt)
observation = make_observation(frames, scene.prompt, episode.states[t], tokenizer, config,
                               norm_stats=norm_stats, discrete_state=False)
actions, capture = sample_actions(model, params, observation, rng=jax.random.key(0), capture=CaptureConfig())
print(capture)
print("first actions (dx, dy; normalised):", np.round(np.asarray(actions)[0, :3, :2], 3))

# %% [markdown]
# ## The token graph and the rollout of the first action token
# A `TokenGraph` stitches the attention of one denoising step together: prefix rows come from the
# prefix pass, action rows from that step's pass. Padding rows are removed. Rollout
# (Abnar & Zuidema) multiplies the per-layer attention with the residual path mixed in
# (`residual=0.5`). After layer *l* it says how much of the first action token's input, traced
# back through layers 0..*l*, comes from each input token.

# %%
graph = flowlens.TokenGraph.from_capture(capture, step=config.num_steps - 1, heads="mean", residual=0.5)
result = flowlens.rollout(graph, "action:0")
per_layer = np.stack([result.token_scores(layer) for layer in result.layers])  # [layer, token]
print("rollout values:", result.values.shape, "(layer, query, node)", "· per-layer token scores:", per_layer.shape)

names, shares = graph.segment_matrix(graph.num_layers - 1)
print("last-layer raw attention of the action tokens, by segment:",
      dict(zip(names, np.round(shares[names.index("actions")], 3))))

# %% [markdown]
# ## See it: the rollout on both cameras and on the prompt's words
# The left panels show the rollout after the last layer, drawn on the frames the model saw, one
# colour scale for both cameras. The bars show the prompt's words. BOS and "\n" are attention
# sinks and are reported apart from the words. The table gives each segment's share.

# %%
from flowlens.figures import FigureConfig, attention_combined_figure

last = config.num_layers - 1
fig = attention_combined_figure(per_layer, capture.layout, images=frames, layer_ids=list(result.layers),
                                config=FigureConfig(method="rollout", query="action a0"), focus_layer=last)
plt.show()

# %% [markdown]
# ## Across all 18 layers
# How the share of the rollout on each camera, on the words and on the sinks changes with depth.

# %%
groups = capture.layout.groups()
shown = [g for g in ("base_0_rgb", "left_wrist_0_rgb", "words", "bos", "newline") if g in groups]
fig, ax = plt.subplots(figsize=(7, 3))
for g in shown:
    ax.plot(result.layers, np.nansum(per_layer[:, groups[g]], axis=1), marker=".", label=g)
ax.set_xlabel("layer")
ax.set_ylabel("share of rollout")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Word scores and the hottest patch
# `word_scores` merges sub-word pieces into words. `patch_grid` lays a camera's token scores out as
# its patch grid, which is what the heatmaps above draw. `frame_heatmap` maps that grid back onto
# the original frame (undoing the letterbox).

# %%
scores = result.token_scores()
words = flowlens.word_scores(scores, capture.layout)
print("words by rollout:", words.ranking()[:4], "· sinks:", {k: round(v, 3) for k, v in words.specials.items()})
grid = flowlens.patch_grid(scores, capture.layout, "base_0_rgb")
print("base-camera patch grid", grid.shape, "· hottest patch (row, col):",
      np.unravel_index(np.nanargmax(grid), grid.shape))
heat = flowlens.frame_heatmap(grid, capture.layout.segment("base_0_rgb"))
print("heatmap on the original frame:", heat.shape)

# %% [markdown]
# ## What the map does and does not tell you
# On 1,000 held-out frames (`benchmarks/train_tabletop.md`), rollout's arg-max on the base camera
# lands on the named object 65 % of the time (chance 18 %). Raw last-layer attention does not
# (9 %), and attention flow is near uniform. The knockouts in notebook 3 show that the route the
# policy *needs* is the image patches reading the prompt, which no map here shows directly. A
# bright patch therefore says where information is mixed in. It does not say what the policy
# uses. Notebooks 3 and 4 test that.
#
# ## The interactive report
# One self-contained HTML file, with sliders for denoising step, layer and head and a switch
# between raw attention and rollout.

# %%
from flowlens.report import report_frame, write_report

path = write_report("quickstart_report.html", [report_frame(capture, frames, label=f"frame {t}")],
                    title=scene.prompt)
print("wrote", path, f"({path.stat().st_size / 1e6:.1f} MB)")

# %% [markdown]
# ## Attention flow, and your own attention arrays
# `flowlens.flow(graph, query, ...)` takes the same arguments as `rollout`. It solves one exact
# max-flow problem per source, and its values come with certified lower and upper bounds.
# `source_sets` gives the flow from whole groups (a camera, the prompt words) through one
# super-source. `attention_rollout` / `attention_flow` take a bare `[layer, head, query, key]`
# array from any model.

# %%
flow = flowlens.flow(graph, "action:0", sources=capture.layout.select(kind="image"),
                     source_sets={name: groups[name] for name in ("base_0_rgb", "left_wrist_0_rgb", "words")})
print("max certified gap:", flow.max_gap, "· group flows:",
      {k: round(float(v[0]), 3) for k, v in flow.set_values.items()})
# Groups at or near the full 1.0 show the known weakness of flow on dense, well-mixed graphs: with
# the residual path the max-flow saturates each source's capacity, so such values reflect
# capacity, not routing (benchmarks/train_tabletop.md).

from flowlens.testing import joint_attention, toy_layout

layout = toy_layout()
attention = joint_attention(layout, num_layers=4, num_heads=2)
print("attention_rollout on a bare array:",
      flowlens.attention_rollout(attention, query=layout.actions.indices, valid=layout.valid).shape)
