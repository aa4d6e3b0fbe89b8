"""flowlens.io: captures on disk, episode sources, capture stores and resumable batch runs.

- ``save_capture`` / ``load_capture``: one Capture ↔ one ``.flcap`` file (capture_file.py).
- ``open_episode`` / ``list_episodes``: MP4 rollouts, LeRobot v2 datasets, flowlens episode folders
  (sources/), each yielding ``Frame`` records with the exact model-input ``FrameTransform``.
- ``open_store``: many captures under a storage policy and precision, appendable and resumable
  (store.py).
- ``run_batch``: a pure per-frame function over many frames into tidy parquet / CSV tables,
  resumable (batch.py).
- ``files``: ``atomic_path`` / ``atomic_write`` (every file flowlens writes, under the umask),
  ``write_json_atomic``, ``safe_name``, ``remove_stale_temps``.
"""

from flowlens.io import files as files
from flowlens.io.files import atomic_path as atomic_path
from flowlens.io.files import atomic_write as atomic_write
from flowlens.io.files import remove_stale_temps as remove_stale_temps
from flowlens.io.files import safe_name as safe_name
from flowlens.io.files import write_json_atomic as write_json_atomic
from flowlens.io.batch import BatchResult as BatchResult
from flowlens.io.batch import BatchRun as BatchRun
from flowlens.io.batch import FrameSpec as FrameSpec
from flowlens.io.batch import plan_frames as plan_frames
from flowlens.io.batch import run_batch as run_batch
from flowlens.io.capture_file import load_capture as load_capture
from flowlens.io.capture_file import read_manifest as read_manifest
from flowlens.io.capture_file import save_capture as save_capture
from flowlens.io.precision import ERROR_BOUND as ERROR_BOUND
from flowlens.io.precision import PRECISIONS as PRECISIONS
from flowlens.io.sources import EpisodeDirSource as EpisodeDirSource
from flowlens.io.sources import EpisodeSource as EpisodeSource
from flowlens.io.sources import EpisodeWriter as EpisodeWriter
from flowlens.io.sources import Frame as Frame
from flowlens.io.sources import LeRobotEpisodeSource as LeRobotEpisodeSource
from flowlens.io.sources import Mp4RolloutSource as Mp4RolloutSource
from flowlens.io.sources import list_episodes as list_episodes
from flowlens.io.sources import open_episode as open_episode
from flowlens.io.sources import to_model_input as to_model_input
from flowlens.io.sources import write_episode as write_episode
from flowlens.io.store import POLICIES as POLICIES
from flowlens.io.store import CaptureStore as CaptureStore
from flowlens.io.store import apply_policy as apply_policy
from flowlens.io.store import frame_key as frame_key
from flowlens.io.store import open_store as open_store
from flowlens.io.store import policy_bytes as policy_bytes

__all__ = [
    "atomic_path",
    "atomic_write",
    "files",
    "remove_stale_temps",
    "write_json_atomic",
    "ERROR_BOUND",
    "POLICIES",
    "PRECISIONS",
    "BatchResult",
    "BatchRun",
    "CaptureStore",
    "EpisodeDirSource",
    "EpisodeSource",
    "EpisodeWriter",
    "Frame",
    "FrameSpec",
    "LeRobotEpisodeSource",
    "Mp4RolloutSource",
    "apply_policy",
    "frame_key",
    "list_episodes",
    "load_capture",
    "open_episode",
    "open_store",
    "plan_frames",
    "policy_bytes",
    "read_manifest",
    "run_batch",
    "safe_name",
    "save_capture",
    "to_model_input",
    "write_episode",
]
