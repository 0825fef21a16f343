import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def randomize_weights(layer, rng, scale=0.5):
    """Give every weight of `layer` random values (both signs) so no term of the update hides."""
    for weight in layer.weights:
        weight.assign(rng.normal(scale=scale, size=weight.shape).astype("float32"))


def build_wheel_venv(tmp_path):
    """Build the wheel from a copy of the package sources (never in the shared tree) and install it
    with --no-deps into a fresh venv that reuses the dependencies of the running one through a
    .pth path (not its .pth files, so the editable install of the checkout is not seen)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "pde_zoo", src / "pde_zoo", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("pde_zoo-*.whl")
    assert "pde_zoo/pretrained_manifest.json" in zipfile.ZipFile(wheel).namelist()
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "_deps_of_the_test_venv.pth").write_text("\n".join(deps) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    return python
