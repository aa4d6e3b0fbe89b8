"""MP4 reading and writing with PyAV (FFmpeg libraries bundled in the wheel; no ffmpeg binary).

``VideoReader`` gives random access to the frames of one video as uint8 ``[height, width, 3]``
RGB arrays, decoding forward from the last position (sequential reads cost one decode each; a
backward jump re-opens the file). ``VideoWriter`` encodes frames to H.264 in an MP4, writing to a
temporary file that replaces the destination only on ``close()``, so an interrupted write never
leaves a half video under the final name. ``lossless=True`` uses ``libx264rgb`` at qp 0 (bit-exact
RGB; fewer players show it), the default is ``yuv420p`` at crf 18 (plays everywhere, lossy).
"""

from __future__ import annotations

import contextlib
import fractions
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from flowlens.errors import FlowlensError
from flowlens.io.files import apply_umask


def _video_error(path: Path, err: Exception) -> FlowlensError:
    return FlowlensError(
        f"video {str(path)!r} cannot be decoded ({type(err).__name__}: {err}); the file is corrupt, "
        "truncated or not a video. Re-export it, or check that the copy finished."
    )


class VideoReader:
    """Random access to the frames of one video file.

    Attributes:
      path: the file.
      num_frames: number of frames (from the container, checked while decoding).
      size: (height, width) of the frames.
      fps: frames per second (None when the container does not say).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FlowlensError(f"video {str(self.path)!r} does not exist.")
        self._container = None
        self._iter: Iterator | None = None
        self._next = 0
        self._last: tuple[int, np.ndarray] | None = None
        self._open()
        stream = self._container.streams.video[0]
        self.size = (int(stream.codec_context.height), int(stream.codec_context.width))
        self.fps = float(stream.average_rate) if stream.average_rate else None
        n = int(stream.frames or 0)
        if n <= 0:  # container without a frame count: count packets
            try:
                n = sum(1 for p in self._container.demux(stream) if p.size)
            except av.error.FFmpegError as e:
                raise _video_error(self.path, e) from None
            self._open()
        self.num_frames = n

    def _open(self) -> None:
        self.close()
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as e:
            raise _video_error(self.path, e) from None
        if not self._container.streams.video:
            self._container.close()
            raise FlowlensError(f"{str(self.path)!r} holds no video stream.")
        self._iter = self._container.decode(self._container.streams.video[0])
        self._next = 0

    def __len__(self) -> int:
        return self.num_frames

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as uint8 [height, width, 3] RGB."""
        if not 0 <= index < self.num_frames:
            raise FlowlensError(
                f"frame {index} out of range: video {str(self.path)!r} has {self.num_frames} frames "
                f"(0–{self.num_frames - 1})."
            )
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        if index < self._next or self._iter is None:
            self._open()
        try:
            while self._next <= index:
                frame = next(self._iter)
                self._next += 1
        except StopIteration:
            raise FlowlensError(
                f"video {str(self.path)!r} ended after {self._next} frames but its header says "
                f"{self.num_frames}: the file is truncated. Frames 0–{self._next - 1} are readable."
            ) from None
        except av.error.FFmpegError as e:
            raise _video_error(self.path, e) from None
        image = frame.to_ndarray(format="rgb24")
        self._last = (index, image)
        return image

    def close(self) -> None:
        container, self._container, self._iter = self._container, None, None
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - closing a broken container must not mask the real error
                pass

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_container", None) is not None:
            self.close()


class VideoWriter:
    """Encode uint8 [height, width, 3] RGB frames into an MP4 (atomic: a temp file until ``close``)."""

    def __init__(self, path: str | os.PathLike, *, fps: float = 10.0, lossless: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.tmp-", suffix=".mp4", dir=self.path.parent
        )
        os.close(fd)
        self.fps = fps
        self.lossless = lossless
        self._container = av.open(self._tmp, "w", format="mp4")
        self._stream = None
        self.count = 0

    def write(self, image: np.ndarray) -> None:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise FlowlensError(
                f"video frames must be uint8 [height, width, 3] RGB, got {image.dtype} "
                f"{image.shape}. Convert with np.clip(x * 255, 0, 255).astype(np.uint8)."
            )
        if self._stream is None:
            h, w = image.shape[:2]
            if not self.lossless and (h % 2 or w % 2):
                raise FlowlensError(
                    f"lossy H.264 (yuv420p) needs even frame sizes, got {h}×{w}; crop or pad "
                    "the frames, or write with lossless=True."
                )
            codec = "libx264rgb" if self.lossless else "libx264"
            self._stream = self._container.add_stream(
                codec, rate=fractions.Fraction(self.fps).limit_denominator(1001)
            )
            self._stream.width, self._stream.height = w, h
            self._stream.pix_fmt = "rgb24" if self.lossless else "yuv420p"
            self._stream.options = {"qp": "0"} if self.lossless else {"crf": "18"}
            self._size = (h, w)
        elif image.shape[:2] != self._size:
            raise FlowlensError(
                f"all frames of {str(self.path)!r} must be {self._size}, frame {self.count} is "
                f"{image.shape[:2]}."
            )
        for packet in self._stream.encode(
            av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        ):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> Path:
        if self._container is None:
            return self.path
        if self._stream is None:
            self.abort()
            raise FlowlensError(f"no frames were written to {str(self.path)!r}.")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        apply_umask(self._tmp)  # mkstemp made it 0600
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial video (the destination is untouched)."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | os.PathLike, frames, *, fps: float = 10.0, lossless: bool = False) -> Path:
    """Write uint8 [frame, height, width, 3] (or an iterable of [height, width, 3]) to an MP4."""
    with VideoWriter(path, fps=fps, lossless=lossless) as w:
        for image in frames:
            w.write(image)
    return Path(path)
