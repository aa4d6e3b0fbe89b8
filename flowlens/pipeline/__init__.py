"""The pipeline behind the ``flowlens`` command, callable from notebooks: source frame → capture →
method (raw / rollout / flow) → projection → figures, MP4 / GIF and the HTML report.

    from flowlens.pipeline import AnalysisSpec, load_backend, open_source, run_single
    backend = load_backend("synthetic")            # "builtin:tabletop", or an openpi checkpoint dir
    source = open_source(video="data/libero/90/videos/rollout_task0_ep0.mp4", prompt="pick up the bowl")
    run_single(source, 10, backend, AnalysisSpec(method="rollout", layers=(0, 8, 17)), output="attention.png")

Module map: ``spec`` (AnalysisSpec: method, query, heads, step, layers), ``backends`` (checkpoint /
builtin / synthetic → Capture), ``sources`` (which episode a command means), ``analyze`` (Capture →
FrameResult scores: rows from ``analysis.rows``, rollout from ``analysis.step_rollout``, flow),
``render`` (--viz-type names → ``flowlens.figures`` composers and paths), ``frames`` (one frame end
to end), ``episode`` (many frames, video, resumable), ``compare`` (success vs failure), ``report``
(HTML, frames from ``flowlens.report.report_frame``), ``demo`` (``flowlens demo``), ``job`` (a batch
job over many episodes and the worker of one episode), ``engines`` (run a job locally or on Ray). The pipeline
orchestrates only: analyses and figures live in ``flowlens.analysis`` / ``flowlens.figures``.
``AnalysisSpec.check_model`` runs once per run, where the backend is known. Imports matplotlib /
JAX only when a figure or a model is used.
"""

from flowlens.pipeline.analyze import FrameResult as FrameResult
from flowlens.pipeline.analyze import analyze_capture as analyze_capture
from flowlens.pipeline.backends import CaptureNeeds as CaptureNeeds
from flowlens.pipeline.backends import ModelBackend as ModelBackend
from flowlens.pipeline.backends import SyntheticBackend as SyntheticBackend
from flowlens.pipeline.backends import builtin_available as builtin_available
from flowlens.pipeline.backends import load_backend as load_backend
from flowlens.pipeline.compare import compare_episodes as compare_episodes
from flowlens.pipeline.engines import LocalEngine as LocalEngine
from flowlens.pipeline.engines import RayEngine as RayEngine
from flowlens.pipeline.engines import run_job as run_job
from flowlens.pipeline.episode import run_episode as run_episode
from flowlens.pipeline.frames import analyze_frame as analyze_frame
from flowlens.pipeline.frames import run_single as run_single
from flowlens.pipeline.job import BatchJob as BatchJob
from flowlens.pipeline.job import EpisodeWorker as EpisodeWorker
from flowlens.pipeline.render import VIZ_CHOICES as VIZ_CHOICES
from flowlens.pipeline.render import VIZ_TYPES as VIZ_TYPES
from flowlens.pipeline.render import expand_viz as expand_viz
from flowlens.pipeline.render import render_figures as render_figures
from flowlens.pipeline.report import build_episode_report as build_episode_report
from flowlens.pipeline.sources import open_source as open_source
from flowlens.pipeline.spec import METHODS as METHODS
from flowlens.pipeline.spec import AnalysisSpec as AnalysisSpec

__all__ = [
    "METHODS",
    "VIZ_CHOICES",
    "VIZ_TYPES",
    "AnalysisSpec",
    "BatchJob",
    "CaptureNeeds",
    "EpisodeWorker",
    "FrameResult",
    "LocalEngine",
    "ModelBackend",
    "RayEngine",
    "SyntheticBackend",
    "analyze_capture",
    "analyze_frame",
    "build_episode_report",
    "builtin_available",
    "compare_episodes",
    "expand_viz",
    "load_backend",
    "open_source",
    "render_figures",
    "run_episode",
    "run_job",
    "run_single",
]
