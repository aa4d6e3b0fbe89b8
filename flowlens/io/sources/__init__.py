"""Episode sources: MP4 rollouts, LeRobot v2 / v3 datasets and flowlens episode folders, read frame by frame."""

from flowlens.io.sources.base import EpisodeSource as EpisodeSource
from flowlens.io.sources.base import Frame as Frame
from flowlens.io.sources.base import to_model_input as to_model_input
from flowlens.io.sources.dispatch import list_episodes as list_episodes
from flowlens.io.sources.dispatch import open_episode as open_episode
from flowlens.io.sources.episode_dir import EpisodeDirSource as EpisodeDirSource
from flowlens.io.sources.episode_dir import EpisodeWriter as EpisodeWriter
from flowlens.io.sources.episode_dir import write_episode as write_episode
from flowlens.io.sources.lerobot import LeRobotEpisodeSource as LeRobotEpisodeSource
from flowlens.io.sources.lerobot_v3 import LeRobotV3EpisodeSource as LeRobotV3EpisodeSource
from flowlens.io.sources.mp4 import Mp4RolloutSource as Mp4RolloutSource
from flowlens.io.sources.mp4 import parse_rollout_name as parse_rollout_name
from flowlens.io.sources.video import VideoReader as VideoReader
from flowlens.io.sources.video import VideoWriter as VideoWriter
from flowlens.io.sources.video import write_video as write_video

__all__ = [
    "EpisodeDirSource",
    "EpisodeSource",
    "EpisodeWriter",
    "Frame",
    "LeRobotEpisodeSource",
    "LeRobotV3EpisodeSource",
    "Mp4RolloutSource",
    "VideoReader",
    "VideoWriter",
    "list_episodes",
    "open_episode",
    "parse_rollout_name",
    "to_model_input",
    "write_episode",
    "write_video",
]
