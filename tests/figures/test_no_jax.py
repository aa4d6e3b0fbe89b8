import subprocess
import sys


def test_figures_and_report_never_import_jax():
    code = (
        "import sys, flowlens.figures, flowlens.report; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'jaxlib')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
