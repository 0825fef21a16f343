"""Beyond one machine, with real processes on loopback (docs/distributed.md):

- `--strategy mirrored` (tf.distribute over two logical CPU devices) gives one device's loss curve;
- `--strategy multihost` (keras.distribution on JAX, two processes): identical weights on both
  after every step, equal to one process at the same global batch; a killed worker, restarted,
  ends the run where an uninterrupted one ends;
- KerasTuner's chief/worker search (chief + two workers): every trial once, the single-process
  search's trials and best trial, also with a worker killed and restarted;
- the sharded sweep: two concurrent runners on one output directory, each job done exactly
  once, also with a runner killed mid-job and restarted; atomic claims under contention.
"""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pde_zoo import distributed, sweep

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra):
    """The environment of a child process: this Python's venv first on PATH, quiet TF, no stray
    distribution variables from the caller's environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_DISTRIBUTION_", "KERASTUNER_", "SLURM_", "JOB_COMPLETION_INDEX"))}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    base["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return {**base, **{k: str(v) for k, v in extra.items()}}


def spawn(cmd, log, **extra_env):
    """Start `cmd` in its own process group (so a kill takes its children too), output to `log`."""
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env(**extra_env), start_new_session=True)


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def finish(process, timeout, log):
    try:
        status = process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"{process.args} did not finish in {timeout} s:\n{Path(log).read_text()[-3000:]}")
    return status


def history(run_dir):
    with open(Path(run_dir) / "history.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- configuration, claims, shards


def test_multihost_env_reads_keras_slurm_and_kubernetes_variables():
    keras_vars = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:1234", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1"}
    assert distributed.multihost_env(keras_vars) == ("10.0.0.1:1234", 2, 1)
    slurm = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "node7:12355", "SLURM_NTASKS": "4", "SLURM_PROCID": "3"}
    assert distributed.multihost_env(slurm) == ("node7:12355", 4, 3)
    indexed_job = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "train-0.svc:12355", "KERAS_DISTRIBUTION_NUM_PROCESSES": "3", "JOB_COMPLETION_INDEX": "2"}
    assert distributed.multihost_env(indexed_job) == ("train-0.svc:12355", 3, 2)
    with pytest.raises(ValueError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        distributed.multihost_env({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"})
    with pytest.raises(ValueError, match="process id must be in"):
        distributed.multihost_env({**slurm, "SLURM_PROCID": "4"})
    with pytest.raises(ValueError, match="strategy must be one of"):
        distributed.setup("mirror")
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        distributed.setup("multihost")  # this process runs TensorFlow


def test_even_batches_and_epoch_order():
    assert distributed.even_batch(10000, 2, 1024) == 1000 and distributed.even_batch(200, 2, 1024) == 200
    assert distributed.even_batch(10000, 16, 1024) == 400 and distributed.even_batch(7, 1, 1024) == 7
    with pytest.raises(ValueError, match="--test-limit a multiple of 2"):
        distributed.even_batch(201, 2, 1024)
    import tensorflow as tf

    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    epoch = tf.Variable(0, dtype=tf.int64)
    ds = distributed.epoch_batches(images, np.arange(10), 4, seed=0, epoch=epoch)
    order = lambda: np.concatenate([y.numpy() for _, y in ds])  # noqa: E731
    first, again = order(), order()
    epoch.assign(1)
    second = order()
    epoch.assign(0)
    assert (first == again).all() and (order() == first).all(), "an epoch's order does not depend on earlier passes"
    assert sorted(first) == sorted(second) == list(range(10)) and (first != second).any()


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_shards_partition_the_sweep():
    """Slurm array and Kubernetes Indexed Job variables pick round-robin shards of the depth-ordered list."""
    from pde_zoo import get_spec, list_models

    jobs = [f"{n}-{d}" for n in list_models() for d in get_spec(n).sweep_depths if n in ("pde1", "pde2", "mlp") and (n == "mlp" or d in (5, 15))]
    jobs = sorted(jobs, key=lambda run: int(run.rsplit("-", 1)[1]))  # stable: name order within a depth
    listed = []
    for shard_env in ({"SLURM_ARRAY_TASK_ID": 4, "SLURM_ARRAY_TASK_MIN": 4, "SLURM_ARRAY_TASK_COUNT": 2}, {"JOB_COMPLETION_INDEX": 1, "PDE_ZOO_NUM_SHARDS": 2}):
        out = subprocess.run(["bash", str(SCRIPTS / "train_all.sh"), "--models", "pde1 pde2 mlp", "--depths", "5 15", "--dry-run"],
                             capture_output=True, text=True, env=env(**shard_env), cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        listed.append([l for l in out.stdout.splitlines() if l.startswith("== shard")][0].split(": ")[-1].split())
    assert listed == [jobs[0::2], jobs[1::2]] and jobs[:2] == ["mlp-0", "pde1-5"]
    for bad in ("2/2", "1", "a/b"):
        out = subprocess.run(["bash", str(SCRIPTS / "train_all.sh"), "--shard", bad, "--dry-run"], capture_output=True, text=True, env=env(), cwd=ROOT)
        assert out.returncode == 2 and "--shard must be K/N" in out.stderr


def _claim_file(run_dir, **record):
    (run_dir / sweep.CLAIM_NAME).write_text(json.dumps(record))


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    run = tmp_path / "pde2-5"
    with sweep.claim(run) as record:
        assert json.loads((run / ".claim").read_text()) == record and record["pid"] == os.getpid()
        with pytest.raises(sweep.ClaimedError, match=f"claimed by {socket.gethostname()}:{os.getpid()}"):
            sweep.acquire(run)
    assert not (run / ".claim").exists(), "released on exit"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _claim_file(run, host=socket.gethostname(), pid=dead.pid, start_time=None)
    assert sweep.acquire(run)["pid"] == os.getpid(), "a dead local owner's claim is taken over"
    _claim_file(run, host="elsewhere", pid=1)
    with pytest.raises(sweep.ClaimedError):
        sweep.acquire(run)  # another host, fresh heartbeat
    os.utime(run / ".claim", (time.time() - 2 * sweep.DEFAULT_TIMEOUT_S,) * 2)
    assert sweep.acquire(run)["host"] == socket.gethostname(), "no heartbeat for the timeout: taken over"
    _claim_file(run, host=socket.gethostname(), pid=os.getpid(), start_time=-5)
    assert sweep.acquire(run)["start_time"] != -5, "a reused pid (other start time) does not hold the claim"


def _fit_with_backup(backup, epochs, x, y, name="mlp", depth=0):
    import keras

    import pde_zoo

    keras.utils.set_random_seed(0)
    model = pde_zoo.compile_model(pde_zoo.build(name, depth))
    ran = []
    model.fit(x, y, epochs=epochs, verbose=0, callbacks=[distributed.backup_callback(backup), keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: ran.append(e))])
    return model, ran


def _images(count=64):
    return np.random.default_rng(0).random((count, 28, 28, 1)).astype("float32"), np.arange(count) % 10


def test_backup_survives_a_kill_between_its_two_files(tmp_path):
    """The state a SIGKILL can leave (new weights renamed in, metadata one epoch behind, a
    half-written temporary file): the next start resumes after the weights' epoch."""
    x, y = _images()
    backup = tmp_path / "backup"
    model, ran = _fit_with_backup(backup, 2, x, y)
    assert ran == [0, 1] and json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 1, "batch": 0}))  # the second rename never happened
    (backup / ".tmp-state.h5").write_bytes(b"\x89HDF\r\n")  # nor did the next epoch's write
    resumed, ran = _fit_with_backup(backup, 3, x, y)
    assert ran == [2], "resumed after epoch 2, the epoch of the weights"
    assert backup.is_dir(), "kept until the caller has written its results"


def test_backup_restores_the_exact_training_state(tmp_path):
    """What a resumed fit starts from is the state at the end of the backed-up epoch, bit for bit: the
    weights and every optimizer variable (step count, Adam's moments) of pde2-3, compared with the
    model that wrote it (an independent read of each variable, not the backup's own reader)."""
    import keras

    x, y = _images()
    backup = tmp_path / "backup"
    trained, _ = _fit_with_backup(backup, 2, x, y, "pde2", 3)
    expected = [keras.ops.convert_to_numpy(v) for v in distributed.training_state(trained)]

    class Capture(keras.callbacks.Callback):  # runs after the backup's on_train_begin, before any step
        def on_train_begin(self, logs=None):
            self.state = [keras.ops.convert_to_numpy(v) for v in distributed.training_state(self.model)]

    import pde_zoo

    capture = Capture()
    model = pde_zoo.compile_model(pde_zoo.build("pde2", 3))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[distributed.backup_callback(backup), capture])
    assert model.optimizer.iterations.numpy() == trained.optimizer.iterations.numpy(), "both epochs were already done"
    assert len(capture.state) == len(expected) == len(trained.weights) + len(trained.optimizer.variables)
    assert all(np.array_equal(a, b) for a, b in zip(capture.state, expected))


def test_backup_of_an_earlier_version_still_resumes(tmp_path):
    """A run interrupted under an earlier pde_zoo left Keras's `latest.weights.h5` (with the epoch as
    an attribute): it restores through Keras's own loader."""
    import h5py

    x, y = _images()
    trained, _ = _fit_with_backup(tmp_path / "new", 1, x, y)
    backup = tmp_path / "old"
    backup.mkdir()
    trained.save_weights(backup / "latest.weights.h5")
    with h5py.File(backup / "latest.weights.h5", "a") as f:
        f.attrs["pde_zoo_epoch"] = 1
    resumed, ran = _fit_with_backup(backup, 2, x, y)
    assert ran == [1]


def test_backup_of_another_model_is_refused(tmp_path):
    x, y = _images()
    backup = tmp_path / "backup"
    _fit_with_backup(backup, 1, x, y, "pde2", 2)
    with pytest.raises(ValueError, match=r"another model's state .* Remove its backup/ directory"):
        _fit_with_backup(backup, 2, x, y, "pde2", 3)


RACE = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("sweep", sys.argv[1]); sweep = importlib.util.module_from_spec(spec); spec.loader.exec_module(sweep)
while time.time() < float(sys.argv[3]): pass
try:
    sweep.acquire(sys.argv[2]); print("won", flush=True); time.sleep(3)  # hold the claim while the others try
except sweep.ClaimedError:
    print("lost")
"""


def test_one_winner_among_racing_processes(tmp_path):
    """Eight processes claim the same fresh job and, next, a job whose owner died, at the same instant."""
    path = ROOT / "pde_zoo" / "sweep.py"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "stale"
    stale.mkdir()
    _claim_file(stale, host=socket.gethostname(), pid=dead.pid, start_time=None)
    for run in (tmp_path / "fresh", stale):
        at = time.time() + 1.0
        racers = [subprocess.Popen([sys.executable, "-c", RACE, str(path), str(run), str(at)], stdout=subprocess.PIPE, text=True) for _ in range(8)]
        outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
        assert outcomes == ["lost"] * 7 + ["won"], (run.name, outcomes)


# ---------------------------------------------------------------- one model, several devices

MIRRORED = """
import json, sys
import tensorflow as tf
from pde_zoo import distributed
run = distributed.setup("mirrored", devices=2)  # splits the CPU before TF runs an op
import keras, numpy as np, pde_zoo
from pde_zoo.layers import _tf_stencil
calls = []
native_stack = _tf_stencil._native_stack
_tf_stencil._native_stack = lambda *a, **k: calls.append(1) or native_stack(*a, **k)
x, y, _ = pde_zoo.data.load_arrays("train")
out = {"native": _tf_stencil.native_ops(tf.float32) is not None}
for name, r in (("one", distributed.Distribution()), ("mirrored", run)):
    keras.utils.set_random_seed(0)
    ds = r.train_dataset(x[:600], y[:600], 128, seed=0)  # 4 batches of 128 and one of 88
    with r.scope():
        model = pde_zoo.compile_model(pde_zoo.build("pde2", 3))
    losses = []
    logger = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(float(logs["loss"])))
    calls.clear()
    model.fit(ds, epochs=2, verbose=0, shuffle=False, callbacks=[*r.callbacks(sys.argv[1] + "/" + name), logger])
    out[name] = {"losses": losses, "weights": [w.tolist() for w in model.get_weights()], "native_traces": len(calls), "replicas": r.replicas}
print(json.dumps(out))
"""


@pytest.mark.slow  # two trainings, one of them on two logical devices (~25 s)
def test_mirrored_two_devices_match_one_device(tmp_path):
    """pde_zoo's Adam under MirroredStrategy (two logical CPUs), the C++ op on each replica:
    the same per-step losses and weights as one device at the same global batch."""
    result = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    one, mirrored = out["one"], out["mirrored"]
    assert mirrored["replicas"] == 2 and len(one["losses"]) == len(mirrored["losses"]) == 10
    np.testing.assert_allclose(mirrored["losses"], one["losses"], rtol=1e-5)
    for a, b in zip(mirrored["weights"], one["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    if out["native"]:
        assert mirrored["native_traces"] >= 2 and one["native_traces"] >= 1, "each replica traced the C++ op"


@pytest.mark.slow  # three CLI training runs (~1 min)
def test_mirrored_cli_killed_resumed_and_exported(tmp_path):
    """`pde-zoo train --strategy mirrored --devices 2`, killed with SIGKILL in its second epoch and
    run again: resumes from the backup; its history is one device's; the SavedModel serves."""
    args = ["pde2", "--depth", "3", "--epochs", "3", "--train-limit", "2560", "--test-limit", "500", "--threads", "2"]
    one = subprocess.run(["pde-zoo", "train", *args, "--out", str(tmp_path / "one")], capture_output=True, text=True, env=env(), cwd=ROOT)
    assert one.returncode == 0, one.stderr[-2000:]
    out, log = tmp_path / "mirrored", tmp_path / "mirrored.log"
    first = spawn(["pde-zoo", "train", *args, "--strategy", "mirrored", "--devices", "2", "--out", str(out)], log)
    wait_for(lambda: (out / "backup" / "training_metadata.json").is_file() or first.poll() is not None, 240, "the epoch-1 backup")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert (out / "backup").is_dir() and not (out / "card.json").exists()
    again = subprocess.run(["pde-zoo", "train", *args, "--strategy", "mirrored", "--devices", "2", "--out", str(out)], capture_output=True, text=True, env=env(), cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    card = json.loads((out / "card.json").read_text())
    assert card["complete"] and card["distribution"] == {"strategy": "mirrored", "replicas": 2, "processes": 1}
    mirrored_rows, one_rows = history(out), history(tmp_path / "one")
    assert [r["epoch"] for r in mirrored_rows] == ["1", "2", "3"]
    for key in ("loss", "test_loss", "test_accuracy"):
        np.testing.assert_allclose([float(r[key]) for r in mirrored_rows], [float(r[key]) for r in one_rows], rtol=2e-5)
    serve = "import sys, numpy as np, tensorflow as tf; m = tf.saved_model.load(sys.argv[1]); print(m.serve(np.zeros((2, 28, 28, 1), np.float32)).shape)"
    served = subprocess.run([sys.executable, "-c", serve, str(out / "saved_model")], capture_output=True, text=True, env=env())
    assert served.stdout.strip() == "(2, 10)", served.stderr[-2000:]


MULTIHOST = """
import os, sys
import numpy as np, keras
from pde_zoo import training
class Trace(keras.callbacks.Callback):
    rows = []
    def on_train_batch_end(self, batch, logs=None):
        self.rows.append(np.concatenate([np.ravel(w) for w in self.model.get_weights()]))
training.train("pde2", 2, epochs=3, train_examples=1024, test_examples=200, out=sys.argv[1], strategy="multihost", verbose=0, threads=1, callbacks=[Trace()])
np.save(sys.argv[2], np.stack(Trace.rows))
"""


def _group(pgid):
    """The pids of process group `pgid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except ProcessLookupError:
                pass
    return pids


def _proc(pid, what):
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes()
    except OSError:
        return b""


def _multihost(tmp_path, name, processes):
    """Train pde2-2 (3 epochs x 8 steps) with `processes` processes; per-process weight traces."""
    port, logs, procs = free_port(), [], []
    for k in range(processes):
        logs.append(tmp_path / f"{name}-{k}.log")
        procs.append(spawn([sys.executable, "-c", MULTIHOST, str(tmp_path / name), str(tmp_path / f"{name}-{k}.npy")], logs[-1], KERAS_BACKEND="jax",
                           KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}", KERAS_DISTRIBUTION_NUM_PROCESSES=processes, KERAS_DISTRIBUTION_PROCESS_ID=k))
    return procs, logs


@pytest.fixture(scope="module")
def multihost_runs(tmp_path_factory):
    """One process, and two processes on loopback, at the same global batch (started together)."""
    tmp = tmp_path_factory.mktemp("multihost")
    single, single_logs = _multihost(tmp, "one", 1)
    pair, pair_logs = _multihost(tmp, "two", 2)
    for process, log in zip(single + pair, single_logs + pair_logs):
        assert finish(process, 400, log) == 0, Path(log).read_text()[-3000:]
    return tmp


@pytest.mark.slow  # JAX, three processes (~1 min)
def test_multihost_workers_hold_the_same_weights_as_one_process(multihost_runs):
    tmp = multihost_runs
    one, w0, w1 = (np.load(tmp / f"{name}.npy") for name in ("one-0", "two-0", "two-1"))
    assert one.shape == w0.shape == w1.shape and one.shape[0] == 24  # 3 epochs x 8 steps of 128
    np.testing.assert_array_equal(w0, w1)  # every step: the gradients were all-reduced
    np.testing.assert_allclose(w0, one, rtol=1e-5, atol=1e-6)  # the global batch split in two
    assert np.abs(one[-1] - one[0]).max() > 1e-3, "the weights moved"
    card = json.loads((tmp / "two" / "card.json").read_text())
    assert card["distribution"] == {"strategy": "multihost", "replicas": 2, "processes": 2} and card["complete"]
    assert [r["epoch"] for r in history(tmp / "two")] == ["1", "2", "3"] and not (tmp / "two" / "backup").exists()


@pytest.mark.slow  # JAX, two launches of two processes (~1.5 min)
def test_multihost_worker_killed_and_restarted(multihost_runs, tmp_path):
    """kill -9 process 1 in the second epoch: process 0 exits at once (no 100 s barrier
    timeout); the same launch command again resumes from the epoch-1 backup and ends with the
    uninterrupted run's weights (nothing lost, nothing trained twice)."""
    port, out, log = free_port(), tmp_path / "run", tmp_path / "launch.log"
    cmd = ["bash", str(SCRIPTS / "launch_multihost.sh"), "--nproc", "2", "--port", str(port), "--",
           "pde2", "--depth", "2", "--epochs", "3", "--train-limit", "1024", "--test-limit", "200", "--threads", "1", "--out", str(out)]
    launcher = spawn(cmd, log)
    wait_for(lambda: (out / "backup" / "training_metadata.json").is_file() or launcher.poll() is not None, 300, "the epoch-1 backup")
    victim = [pid for pid in _group(launcher.pid) if b"pde-zoo" in _proc(pid, "cmdline") and b"KERAS_DISTRIBUTION_PROCESS_ID=1\0" in _proc(pid, "environ")]
    assert len(victim) == 1, (victim, Path(log).read_text()[-2000:])
    os.kill(victim[0], signal.SIGKILL)
    killed_at = time.time()
    assert finish(launcher, 120, log) != 0
    assert time.time() - killed_at < 60, "the surviving process exits promptly"
    assert (out / "backup").is_dir() and not (out / "card.json").exists()
    again = spawn(cmd, tmp_path / "again.log")  # the same command
    assert finish(again, 400, tmp_path / "again.log") == 0, (tmp_path / "again.log").read_text()[-3000:]
    assert [r["epoch"] for r in history(out)] == ["1", "2", "3"]
    import keras

    final = np.concatenate([np.ravel(w) for w in keras.saving.load_model(out / "model.keras", compile=False).get_weights()])
    np.testing.assert_allclose(final, np.load(multihost_runs / "one-0.npy")[-1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- distributed learning-rate search

TUNE_ARGS = ["pde2", "--depth", "1", "--max-epochs", "2", "--factor", "2", "--train-limit", "1024", "--val-limit", "256", "--threads", "1"]


def _trials(project):
    rows = []
    for path in sorted(Path(project).glob("trial_*/trial.json")):
        t = json.loads(path.read_text())
        values = t["hyperparameters"]["values"]
        rows.append((t["status"], round(values["learning_rate"], 12), values["tuner/epochs"], values["tuner/initial_epoch"], t["score"]))
    return sorted(rows)


@pytest.mark.slow  # a chief, two workers, a restarted worker and a single-process search (~1 min)
def test_distributed_search_with_a_killed_worker_matches_single_process(tmp_path):
    port = free_port()
    single = spawn(["pde-zoo", "tune", *TUNE_ARGS, "--directory", str(tmp_path / "single"), "--models-dir", str(tmp_path / "single-models")], tmp_path / "single.log")
    launch = ["bash", str(SCRIPTS / "launch_tuner.sh"), "--port", str(port)]
    tune = ["--", *TUNE_ARGS, "--directory", str(tmp_path / "shared"), "--models-dir", str(tmp_path / "models"), "--overwrite"]
    cluster = spawn([*launch, "--workers", "1", *tune], tmp_path / "cluster.log")  # the chief and tuner0
    victim_log = tmp_path / "tuner1-killed.log"
    victim = spawn([*launch, "--worker", "tuner1", *tune], victim_log)
    wait_for(lambda: "started by tuner1" in victim_log.read_text() or victim.poll() is not None, 300, "tuner1's first trial")
    os.killpg(victim.pid, signal.SIGKILL)  # mid-trial
    killed_trial = re.search(r"trial (\d+) started by tuner1", victim_log.read_text()).group(1)
    assert f"trial {killed_trial} finished" not in victim_log.read_text(), "killed mid-trial"
    restarted_log = tmp_path / "tuner1-restarted.log"
    restarted = spawn([*launch, "--worker", "tuner1", *tune], restarted_log)
    assert finish(cluster, 400, tmp_path / "cluster.log") == 0, (tmp_path / "cluster.log").read_text()[-3000:]
    assert finish(restarted, 60, restarted_log) == 0, restarted_log.read_text()[-3000:]
    assert finish(single, 400, tmp_path / "single.log") == 0

    logs = (tmp_path / "cluster.log").read_text() + victim_log.read_text() + restarted_log.read_text()
    finished = [line.split("trial ")[1].split()[0] for line in logs.splitlines() if " finished by " in line]
    result = json.loads((tmp_path / "models" / "tuning" / "pde2-1.json").read_text())
    assert sorted(finished) == sorted(set(finished)) and len(finished) == result["trials"] == 5, "every trial finished once"
    assert f"trial {killed_trial} finished by tuner1" in restarted_log.read_text(), "the restarted worker got its trial back"
    project = tmp_path / "shared" / "pde2-1"
    assert _trials(project) == _trials(tmp_path / "single" / "pde2-1"), "the single-process search's trials and scores"
    assert all(status == "COMPLETED" for status, *_ in _trials(project))
    single_result = json.loads((tmp_path / "single-models" / "tuning" / "pde2-1.json").read_text())
    assert (result["learning_rate"], result["best_val_accuracy"]) == (single_result["learning_rate"], single_result["best_val_accuracy"])
    assert result["search"]["distributed"] and not single_result["search"]["distributed"]


# ---------------------------------------------------------------- the sweep across machines

SWEEP = ["--models", "pde2 mlp", "--depths", "5", "--epochs", "3", "--train-limit", "1024", "--test-limit", "200", "--jobs", "1"]


@pytest.mark.slow  # two runners, two jobs, one runner killed and restarted (~1.5 min)
def test_two_runners_share_a_sweep_with_a_runner_killed(tmp_path):
    out = tmp_path / "out"
    cmd = ["bash", str(SCRIPTS / "train_all.sh"), *SWEEP, "--out", str(out)]
    a = spawn(cmd, tmp_path / "a.log", PDE_ZOO_RETRY_S=2)
    b = spawn(cmd, tmp_path / "b.log", PDE_ZOO_RETRY_S=2)

    killed = []

    def b_holds_a_job_past_epoch_1():
        for claim in out.glob("*/.claim"):
            try:
                pid = json.loads(claim.read_text() or "{}").get("pid")
                if pid and os.getpgid(pid) == b.pid and (claim.parent / "backup" / "training_metadata.json").is_file():
                    killed.append(claim.parent)
                    return True
            except (OSError, ValueError):
                pass
        return b.poll() is not None

    wait_for(b_holds_a_job_past_epoch_1, 400, "runner b mid-job, past its epoch-1 backup")
    assert b.poll() is None, "runner b finished before it could be killed"
    os.killpg(b.pid, signal.SIGKILL)  # the runner, its trainer and everything under it
    b.wait()
    b_again = spawn(cmd, tmp_path / "b-again.log", PDE_ZOO_RETRY_S=2)
    for process, log in ((a, "a.log"), (b_again, "b-again.log")):
        assert finish(process, 600, tmp_path / log) == 0, (tmp_path / log).read_text()[-3000:]

    logs = "".join((tmp_path / log).read_text() for log in ("a.log", "b.log", "b-again.log"))
    done = sorted(line.split()[3] for line in logs.splitlines() if line.startswith("== ") and " done  " in line)
    assert done == ["mlp-0", "pde2-5"], "every job trained to completion exactly once"
    for run in done:
        card = json.loads((out / run / "card.json").read_text())
        assert card["complete"] and [r["epoch"] for r in history(out / run)] == ["1", "2", "3"]
        assert not (out / run / ".claim").exists() and not (out / run / "backup").exists()
    assert (killed[0] / "train.log").read_text().count("Epoch 1/3") == 1, "the killed job resumed after its epoch 1"
    with open(out / "results.csv") as f:
        assert sorted(r["model"] for r in csv.DictReader(f)) == ["mlp", "pde2"]
