"""First contact: a quiet console (TensorFlow's start-up lines filtered, real messages kept),
`pde-zoo info`, and usage errors of the command line."""

import os
import subprocess
import sys

import pytest

from pde_zoo import console

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796165184.758823   23894 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results",
    "I0000 00:00:1796164210.640346    9805 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1796164069.078400    4798 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.",
    "W0000 00:00:1796164210.1 123 op_level_cost_estimator.cc:699] NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition",
]
KEPT = [
    "pde-zoo eval: error: Unknown model 'x'",
    "/work/main/pde_zoo/x.py:3: RuntimeWarning: pde_zoo: the C++ ops are unavailable",
    "E0000 00:00:1796164069.078400    4798 my_kernel.cc:52] a real kernel error",
    "Traceback (most recent call last):",
]


@pytest.mark.parametrize("line", NOISE)
def test_noise_patterns_match(line):
    assert console.NOISE.match(line)


@pytest.mark.parametrize("line", KEPT)
def test_real_messages_are_kept(line):
    assert not console.NOISE.match(line)


def test_the_filter_on_file_descriptor_2():
    """What C++ writes to fd 2 goes through the filter: noise dropped, everything else kept, in order."""
    written = ("\n".join(NOISE[:3] + KEPT[:2]) + "\n").encode()
    code = (
        "import importlib.util, os, sys\n"  # console.py alone: importing the package would start TensorFlow first
        f"spec = importlib.util.spec_from_file_location('console', {console.__file__!r})\n"
        "console = importlib.util.module_from_spec(spec); spec.loader.exec_module(console)\n"
        "console.quiet_stderr()\n"
        f"os.write(2, {written!r})\n"
        "print('python warning', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stderr.splitlines() == KEPT[:2] + ["python warning"]


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pde_zoo.cli", *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_cli_prints_no_start_up_lines_unless_verbose():
    quiet = _cli("eval", "mlp-0", "--limit", "100", env={"PDE_ZOO_VERBOSE": "0"})
    assert quiet.returncode == 0 and '"test_accuracy"' in quiet.stdout
    assert quiet.stderr == "", quiet.stderr[-2000:]
    loud = _cli("--verbose", "eval", "mlp-0", "--limit", "100")
    assert loud.returncode == 0 and "absl::InitializeLog" in loud.stderr  # TF 2.21 prints it at start-up


def test_info_reports_everything_a_bug_report_needs():
    result = _cli("info")
    assert result.returncode == 0 and result.stderr == ""
    labels = [line.split("  ")[0] for line in result.stdout.splitlines()]
    assert labels == ["pde_zoo", "python", "tensorflow", "keras", "jax", "keras backend", "cpu", "C++ ops", "GPUs", "cache",
                      "MNIST", "TFDS data dir", "pretrained models"]
    assert "AVX" in result.stdout and "pdenet-16" in result.stdout


def test_info_never_fails(monkeypatch):
    from pde_zoo import info

    def broken():
        raise RuntimeError("no device")

    monkeypatch.setattr(info, "_gpus", broken)
    assert dict(info.collect())["GPUs"] == "unknown (RuntimeError: no device)"


@pytest.mark.parametrize("argv", [[], ["frobnicate"]])
def test_usage_errors_list_the_subcommands(argv):
    result = _cli(*argv)
    assert result.returncode == 2
    assert "usage: pde-zoo" in result.stderr and "train" in result.stderr and "info" in result.stderr


def test_list_pretrained_shows_each_preset_with_its_accuracy():
    result = _cli("list", "--pretrained")
    assert result.returncode == 0 and result.stderr == ""
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(rows) == set(__import__("pde_zoo").list_pretrained())
    card = __import__("pde_zoo").cards.read_card("pdenet-16")
    assert f"{100 * card['test_accuracy']:.2f}%" in rows["pdenet-16"] and "channels=32" in rows["pdenet-16"]


def test_help_of_a_subcommand():
    result = _cli("train", "--help")
    assert result.returncode == 0 and "--from-card" in result.stdout and "--recipe" in result.stdout


def _write_idx(path, array):
    import struct

    import numpy as np

    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(np.asarray(array, np.uint8).tobytes())


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_first_tfds_preparation_prints_two_clean_lines(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    for stem, n in (("train", 40), ("t10k", 10)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, n))
    env = {"PDE_ZOO_CACHE": str(tmp_path / "cache"), "PDE_ZOO_VERBOSE": "0"}
    first = _cli("data", "--data-dir", str(tmp_path), env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert len(lines) == 2 and "preparing the IDX files" in lines[0] and lines[1].startswith("pde_zoo: prepared in "), first.stderr
    assert first.stdout.startswith("MNIST ready: 40 train / 10 test images")
    again = _cli("data", "--data-dir", str(tmp_path), env=env)
    assert again.returncode == 0 and again.stderr == ""
