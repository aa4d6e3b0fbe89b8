"""The installed ``flowlens`` console script (pyproject ``[project.scripts]``), run as a user would."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys


def _flowlens() -> list[str]:
    exe = shutil.which("flowlens", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert exe, "the flowlens console script is not installed (pip install -e .)"
    return [exe]


def test_console_script_single_and_error(libero_tree, png_ok):
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}
    argv = shlex.split(
        "--mode single --video data/libero/90/videos/rollout_task0_ep0.mp4 --frame-idx 10 "
        "--prompt 'pick up the black bowl and place it on the plate' --checkpoint synthetic "
        "--output attention.png --layers 0 8 17 --viz-type image"
    )
    done = subprocess.run(_flowlens() + argv, cwd=libero_tree, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    png_ok(libero_tree / "attention.png")
    bad = subprocess.run(
        _flowlens() + argv[:-6] + ["--frame-idx", "999"],
        cwd=libero_tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("flowlens: error: frame 999 out of range")
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
