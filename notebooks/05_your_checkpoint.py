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
# # Your own checkpoint: a Pi0 / Pi0.5 checkpoint and a LIBERO rollout video
#
# The same analyses as the quickstart, on a checkpoint you hold and a video of your policy.
# Set the paths in the next cell. flowlens reads:
#
# - an **openpi JAX checkpoint** directory (orbax `params/` plus `assets/<robot>/norm_stats.json`),
#   e.g. `~/.cache/openpi/openpi-assets/checkpoints/pi0_libero`; or an openpi-PyTorch /
#   LeRobot folder holding `model.safetensors`. Pi0 vs Pi0.5 is recognised from the weight
#   shapes. `CONFIG` names a registered config (`pi0_libero`, `pi05_libero`, ...) where the
#   shapes cannot tell.
# - PaliGemma's SentencePiece file `paligemma_tokenizer.model`;
# - a rollout video. openpi's LIBERO videos are named `rollout_<task words>_<success|failure>.mp4`,
#   and the file name gives the prompt. Otherwise set `PROMPT`.
#
# A full-size Pi0 needs about 7 GB of memory and takes seconds per frame on a CPU; a GPU is faster.
# The test suite runs this notebook on a small *randomly initialised* checkpoint that it writes in
# openpi layout, and on a synthetic video. Its attention maps are therefore meaningless, and
# only the mechanics are checked.

# %% tags=["parameters"]
CHECKPOINT = "checkpoints/pi0_libero"
TOKENIZER = "paligemma_tokenizer.model"
VIDEO = "data/libero/videos/rollout_pick_up_the_black_bowl_and_place_it_on_the_plate_success.mp4"
PROMPT = None  # None: from the video's file name
CONFIG = None  # None: recognised from the checkpoint
FRAMES = (0, 10, 20)  # frames to analyse; the first is drawn in detail

# %%
import matplotlib.pyplot as plt
import numpy as np

import flowlens
from flowlens.pipeline import AnalysisSpec, CaptureNeeds, load_backend, open_source, run_single

backend = load_backend(CHECKPOINT, tokenizer=TOKENIZER, config=CONFIG)
source = open_source(video=VIDEO, prompt=PROMPT)
print(f"model {backend.name}: {backend.num_layers} layers × {backend.num_heads} heads, "
      f"{backend.num_steps} denoising steps")
print(f"episode: {len(source)} frames · prompt {source.prompt!r} · cameras {source.cameras}")

# %% [markdown]
# ## One frame: capture, rollout, both projections
# `backend.capture` runs the model on one frame of the episode. It takes care of openpi's
# preprocessing: LIBERO's camera names, resize-with-pad and the state's normalisation. The
# `FrameTransform` of each camera maps model patches back onto the video frame.

# %%
frame = source.frame(FRAMES[0])
capture = backend.capture(frame, CaptureNeeds(steps=(0,)))
graph = flowlens.TokenGraph.from_capture(capture, step=0, heads="mean", residual=0.5)
result = flowlens.rollout(graph, "actions")
scores = result.token_scores()
print(capture)
print("rollout share per segment:",
      {g: round(float(np.nansum(scores[idx])), 3) for g, idx in capture.layout.groups().items()})
print("top words:", flowlens.word_scores(scores, capture.layout).ranking()[:3])

# %%
from flowlens.figures import FigureConfig, attention_combined_figure

per_layer = np.stack([result.token_scores(layer) for layer in result.layers])
attention_combined_figure(per_layer, capture.layout, images=frame.images, layer_ids=list(result.layers),
                          config=FigureConfig(method="rollout", query="action tokens"))
plt.show()

# %% [markdown]
# ## The `flowlens single` figures from Python
# `run_single` is the command's pipeline. It checks everything before the model runs and writes
# each figure atomically. Here it draws raw attention in layers 0, the middle layer and the last.

# %%
last = backend.num_layers - 1
spec = AnalysisSpec(method="raw", query="action:0", layers=(0, last // 2, last))
paths = run_single(source, FRAMES[0], backend, spec, viz=("image",), output="single/")
print({k: str(v) for k, v in paths.items()})
fig, ax = plt.subplots(figsize=(10, 4))
ax.imshow(plt.imread(paths["image"]))
ax.axis("off")
plt.show()

# %% [markdown]
# ## A few frames into the interactive report
# One `report_frame` per frame: raw attention per step, layer and head, and rollout. The HTML file
# is self-contained. For a whole episode, `flowlens report --video ...` does the same from the
# shell.

# %%
from flowlens.report import report_frame, write_report

frames = []
for index in FRAMES:
    f = source.frame(index)
    frames.append(report_frame(backend.capture(f, CaptureNeeds(steps=(0,), all_heads=True)), f.images,
                               label=f"frame {index}"))
path = write_report("my_checkpoint_report.html", frames, title=source.prompt)
print("wrote", path, f"({path.stat().st_size / 1e6:.1f} MB)")
source.close()
