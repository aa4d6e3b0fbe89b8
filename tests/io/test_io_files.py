"""flowlens.io.files: the one atomic-write helper, and that what flowlens writes honours the umask (issue 14)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.io import save_capture, write_episode
from flowlens.io.files import atomic_path, atomic_write, remove_stale_temps, write_json_atomic
from flowlens.testing import synthetic_capture


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    with atomic_write(tmp_path / "new" / "table.csv", "w") as f:
        f.write("a,b\n1,2\n")
    with atomic_path(tmp_path / "scores.npz") as tmp:
        np.savez(tmp, x=np.arange(3))
    write_json_atomic(tmp_path / "store.json", {"k": np.int64(1)})
    save_capture(synthetic_capture("toy", num_layers=1, num_heads=1, num_steps=1), tmp_path / "c.flcap")
    ep = write_episode(tmp_path / "ep", {"base_0_rgb": np.zeros((2, 16, 16, 3), np.uint8)}, prompt="pick")
    for name in ("new/table.csv", "scores.npz", "store.json", "c.flcap", "ep/base_0_rgb.mp4", "ep/episode.json"):
        assert _mode(tmp_path / name) == file_mode, name
    assert _mode(ep) == dir_mode
    assert (tmp_path / "new" / "table.csv").read_text() == "a,b\n1,2\n"
    assert not [p for p in tmp_path.rglob(".*") if ".tmp-" in p.name]


def test_atomic_write_leaves_the_old_file_on_error_and_temps_are_removable(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    stale = tmp_path / ".b.json.tmp-x1.json"
    stale.write_text("half")
    assert remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists()


def test_atomic_path_refuses_a_directory_and_a_missing_folder_unless_parents(tmp_path):
    with pytest.raises(FlowlensError, match=r"is a directory; give a file name"), atomic_path(tmp_path):
        pass
    with pytest.raises(FlowlensError, match=r"does not exist; create"), atomic_path(tmp_path / "x" / "a.png"):
        pass
    with atomic_path(tmp_path / "x" / "a.png", parents=True) as tmp:
        assert tmp.suffix == ".png" and tmp.name.startswith(".a.png.tmp-")
        tmp.write_bytes(b"png")
    assert (tmp_path / "x" / "a.png").read_bytes() == b"png"


def test_public_names_are_exported_from_flowlens_io():
    import flowlens.io as io
    from flowlens.figures import atomic_path as figures_atomic_path

    for name in ("atomic_path", "atomic_write", "remove_stale_temps", "safe_name", "write_json_atomic"):
        assert getattr(io, name) is getattr(io.files, name)
    assert figures_atomic_path is atomic_path
