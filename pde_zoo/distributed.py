"""One model on several devices or hosts: `pde-zoo train ... --strategy mirrored | multihost`.

Two existing engines, chosen by what works with Keras 3 today:

- `mirrored`: `tf.distribute.MirroredStrategy` on one host (TensorFlow backend): all its GPUs,
  or `devices` logical CPU devices when it has none (how the tests run it). The model is built
  and compiled inside `strategy.scope()`; each global batch is split over the replicas and the
  gradients are summed, so the loss curve is one device's at the same global batch. On CPU each
  replica runs the zoo's C++ stencil op on its slice (with a GPU the standard-op path).
- `multihost`: Keras 3's own `keras.distribution` on the JAX backend (`KERAS_BACKEND=jax`):
  `keras.distribution.initialize` (a JAX coordinator on process 0, gloo collectives on CPU)
  and `DataParallel` over every device of every process; each process reads 1/N of every
  global batch, the weights are replicated and updated with all-reduced gradients.
  TensorFlow's `MultiWorkerMirroredStrategy` is not used: it fails inside Keras 3's `fit`
  (keras-team/keras#20585).

Multihost processes are configured by environment variables, Keras's own names first:

    KERAS_DISTRIBUTION_JOB_ADDRESSES   coordinator HOST:PORT (process 0's host, a free port)
    KERAS_DISTRIBUTION_NUM_PROCESSES   number of processes    (else SLURM_NTASKS)
    KERAS_DISTRIBUTION_PROCESS_ID      this process, 0..N-1   (else SLURM_PROCID, else
                                       JOB_COMPLETION_INDEX of a Kubernetes Indexed Job)

Process 0 (the chief) writes the run directory; every process restores from the chief's
`backup/` on restart, so the run directory must be on a filesystem all hosts share. A process
that loses a peer exits at once (status 1): a synchronous data-parallel group cannot go on
without it, so restart all processes with the same command and the run resumes from the last
finished epoch (BackupAndRestore).
"""

import contextlib
import json
import os
import sys
import traceback

from pde_zoo.io_utils import atomic_write_text

STRATEGIES = ("none", "mirrored", "multihost")
EVAL_BATCH = 1024


def multihost_env(environ=None):
    """(coordinator address, number of processes, process id) from the environment variables
    in this module's docstring; ValueError naming what is missing."""
    env = os.environ if environ is None else environ
    address = env.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    count = env.get("KERAS_DISTRIBUTION_NUM_PROCESSES", env.get("SLURM_NTASKS"))
    index = env.get("KERAS_DISTRIBUTION_PROCESS_ID", env.get("SLURM_PROCID", env.get("JOB_COMPLETION_INDEX")))
    missing = [name for name, value in (("KERAS_DISTRIBUTION_JOB_ADDRESSES (coordinator HOST:PORT)", address),
                                        ("KERAS_DISTRIBUTION_NUM_PROCESSES (or SLURM_NTASKS)", count),
                                        ("KERAS_DISTRIBUTION_PROCESS_ID (or SLURM_PROCID / JOB_COMPLETION_INDEX)", index)) if value is None]
    if missing:
        raise ValueError(f"--strategy multihost needs the environment variable(s) {', '.join(missing)}; scripts/launch_multihost.sh sets them (see docs/distributed.md).")
    count, index = int(count), int(index)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"multihost: process id must be in [0, number of processes). Received: process_id={index}, num_processes={count}")
    return address.split(",")[0], count, index


def use_cpu_devices(count):
    """Split the host CPU into `count` logical TensorFlow devices (to run replicas without GPUs).

    Must run before TensorFlow initializes its devices (before it runs any op)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as err:
        raise ValueError(f"--devices {count}: TensorFlow's devices are already initialized; split the CPU before TensorFlow runs any op ({err})") from err
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def setup(strategy="none", devices=None):
    """The `Distribution` a training run uses; call before TensorFlow / JAX run any op.

    Args:
        strategy: "none", "mirrored" or "multihost" (see the module docstring).
        devices: mirrored only: replicas to use. With GPUs, the first `devices` GPUs (default
            all); without, the CPU split into `devices` logical devices (default 1).
    """
    if strategy in (None, "none"):
        if devices not in (None, 1):
            raise ValueError(f"devices needs strategy='mirrored'. Received: devices={devices}")
        return Distribution()
    if strategy == "mirrored":
        return _mirrored(devices)
    if strategy == "multihost":
        if devices is not None:
            raise ValueError("devices applies to strategy='mirrored'; a multihost run uses every device of every process.")
        return _multihost()
    raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={strategy!r}")


def _mirrored(devices):
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"--strategy mirrored runs on the TensorFlow backend. Received: KERAS_BACKEND={keras.backend.backend()}")
    if devices is not None and devices < 1:
        raise ValueError(f"devices must be >= 1. Received: devices={devices}")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [f"/gpu:{i}" for i in range(len(gpus))][: devices or len(gpus)]
    else:
        names = use_cpu_devices(devices or 1)
    return Distribution("mirrored", strategy=tf.distribute.MirroredStrategy(names), replicas=len(names))


def _multihost():
    import keras

    if keras.backend.backend() != "jax":
        raise ValueError("--strategy multihost runs on the JAX backend: set KERAS_BACKEND=jax before starting Python (scripts/launch_multihost.sh does).")
    import jax

    address, count, index = multihost_env()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes (GPUs use NCCL)
    if count > 1:
        keras.distribution.initialize(job_addresses=address, num_processes=count, process_id=index)
    devices = jax.devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return Distribution("multihost", replicas=len(devices), process_id=index, num_processes=count, coordinator=address)


class Distribution:
    """How one training run is spread: its strategy scope, datasets, callbacks and who writes.

    Attributes:
        kind: "none", "mirrored" or "multihost".
        replicas: devices holding a model replica (all processes together).
        process_id, num_processes: this process and the group size (multihost; else 0 and 1).
        is_chief: whether this process writes the run directory (process 0).
    """

    def __init__(self, kind="none", *, strategy=None, replicas=1, process_id=0, num_processes=1, coordinator=None):
        self.kind, self.strategy, self.replicas = kind, strategy, replicas
        self.process_id, self.num_processes, self.coordinator = process_id, num_processes, coordinator
        self.is_chief = process_id == 0
        self._epoch = None  # the data order's epoch, a tf.Variable once `train_dataset` made one

    def describe(self):
        """For the model card."""
        return {"strategy": self.kind, "replicas": self.replicas, "processes": self.num_processes}

    def scope(self):
        """Build and compile the model inside this (`strategy.scope()` for mirrored)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def train_dataset(self, images, labels, batch_size, seed, shift=0):
        """The shuffled training batches (`batch_size` is the global batch), in an order fixed by
        (seed, epoch) alone, each image shifted by up to `shift` pixels (`epoch_batches`); pass
        `self.callbacks(...)` to `fit`.

        multihost: every batch full (the last partial batch of each epoch, a different random
        remainder each epoch, is dropped), so each process reads an equal share.
        """
        import tensorflow as tf

        drop = self.kind == "multihost"
        if drop and batch_size % self.replicas:
            raise ValueError(f"multihost: the global batch must split evenly over the {self.replicas} devices. Received: batch_size={batch_size}")
        if drop and len(images) < batch_size:
            raise ValueError(f"multihost: fewer training images ({len(images)}) than one global batch ({batch_size}).")
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
        return self._prepare(epoch_batches(images, labels, batch_size, seed, self._epoch, drop_remainder=drop, shift=shift))

    def eval_dataset(self, images, labels):
        """The test batches for per-epoch validation (multihost: equal, full batches per process)."""
        import tensorflow as tf

        from pde_zoo import data as data_lib

        batch_size = EVAL_BATCH
        if self.kind == "multihost":
            batch_size = even_batch(len(images), self.replicas, EVAL_BATCH)
            ds = data_lib.make_dataset(images, labels, batch_size).unbatch().batch(batch_size, drop_remainder=True)
            return ds.apply(tf.data.experimental.assert_cardinality(len(images) // batch_size))
        return self._prepare(data_lib.make_dataset(images, labels, batch_size))

    def _prepare(self, ds):
        if self.kind == "mirrored":
            import tensorflow as tf

            # One host reads every batch and splits it over the replicas: nothing to shard
            # (auto-sharding would rewrite and clone the pipeline).
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            ds = ds.with_options(options)
        return ds

    def callbacks(self, backup_dir):
        """For `fit`: the epoch of the data order, then `backup_callback(backup_dir, ...)`.

        Only the chief writes the backup; every process restores from it, so all resume at
        the same epoch, and a resumed epoch reads the batches an uninterrupted run would."""
        import keras

        epoch_variable = self._epoch

        class DataEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch_variable is not None:
                    epoch_variable.assign(epoch)

        # Saving builds a throwaway optimizer (Keras's attribute skip-set); under the multihost
        # distribution its variables would be placed by a collective the other processes never
        # join, so the chief saves with the distribution off.
        return [DataEpoch(), backup_callback(backup_dir, write=self.is_chief, local_save=self.num_processes > 1)]

    @contextlib.contextmanager
    def guard(self):
        """Around `fit`: a multihost process whose peer died exits at once (status 1) instead of
        waiting for JAX's shutdown barrier to time out (~100 s); restart the whole group."""
        if self.num_processes == 1:
            yield
            return
        try:
            yield
        except BaseException:
            traceback.print_exc()
            print(f"pde-zoo: multihost process {self.process_id}/{self.num_processes} failed; restart every process with the same command to resume from the last finished epoch.", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            from pde_zoo import console

            console.restore()  # drain the quiet console's pipe: os._exit runs no atexit hook
            os._exit(1)

    def local_model(self, model, rebuild):
        """After `fit`: a model this process can evaluate, save and export by itself.

        multihost: the trained (replicated) weights and optimizer state copied into a model
        built by `rebuild()` outside the distribution; otherwise `model` itself.
        """
        if self.kind != "multihost":
            return model
        import keras

        weights = model.get_weights()
        optimizer_state = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
        keras.distribution.set_distribution(None)
        local = rebuild()
        local.set_weights(weights)
        local.stop_training = model.stop_training
        local.optimizer.build(local.trainable_variables)
        for variable, value in zip(local.optimizer.variables, optimizer_state):
            variable.assign(value)
        return local


def backup_callback(backup_dir, write=True, local_save=False):
    """`keras.callbacks.BackupAndRestore` at `backup_dir` that a SIGKILL at any instant cannot
    break, and whose cost hardly grows with the number of variables.

    Every epoch writes the training state (`model.weights`, then `model.optimizer.variables`)
    to `state.h5` (`write_state`: one dataset per dtype) under a temporary name and renames it
    into place, the file carrying its epoch, from which a metadata file one rename behind is
    repaired at the next start (Keras writes both in place: a kill mid-write left a truncated
    file that failed every later resume). Keras's own `model.save_weights` walks the model and
    writes one HDF5 dataset per variable: 0.18 s per epoch for pde2-50's 770 variables, 13x
    the mlp's, against 0.03 s for `write_state` (AMD EPYC, 2 cores). A backup written by an
    earlier pde_zoo (Keras's `latest.weights.h5`) still restores.

    The backup is kept at the end of `fit`; the caller removes it once the run's results are
    written, so a kill after training resumes at the end instead of training again.
    `write=False` only restores (multihost processes other than the chief).
    """
    import h5py
    import keras

    state_path = os.path.join(backup_dir, "state.h5")
    keras_weights_path = os.path.join(backup_dir, "latest.weights.h5")  # an earlier pde_zoo's backup
    metadata_path = os.path.join(backup_dir, "training_metadata.json")

    class Backup(keras.callbacks.BackupAndRestore):
        def on_train_begin(self, logs=None):
            written = next((p for p in (state_path, keras_weights_path) if os.path.isfile(p)), None)
            if written is None:
                return
            with h5py.File(written, "r") as f:  # every process repairs alike (same content)
                epoch = f.attrs.get("pde_zoo_epoch")
            if epoch is not None:
                atomic_write_text(metadata_path, json.dumps({"epoch": int(epoch), "batch": 0}))
            if written == keras_weights_path:
                super().on_train_begin(logs)
                return
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            read_state(state_path, training_state(self.model))
            self.model._initial_epoch = int(epoch)  # what Keras's own restore sets (write_state always records it)

        def on_epoch_end(self, epoch, logs=None):
            if not write:
                return
            os.makedirs(backup_dir, exist_ok=True)
            tmp = os.path.join(backup_dir, ".tmp-state.h5")
            with _without_distribution() if local_save else contextlib.nullcontext():
                write_state(tmp, training_state(self.model), pde_zoo_epoch=epoch + 1)
            os.replace(tmp, state_path)
            atomic_write_text(metadata_path, json.dumps({"epoch": epoch + 1, "batch": 0}))

    return Backup(str(backup_dir), delete_checkpoint=False)


def training_state(model):
    """The variables a resumed `fit` needs, in a fixed order: the model's weights (what
    `get_weights` returns), then its optimizer's variables (step count, slots)."""
    return list(model.weights) + (list(model.optimizer.variables) if model.optimizer is not None else [])


def write_state(path, variables, **attrs):
    """Write `variables` to the HDF5 file `path`: their values flattened and concatenated into
    one dataset per dtype, and an attribute `layout` (JSON: path, shape and dtype of each, in
    order) that `read_state` checks. `attrs` are stored as file attributes too."""
    import h5py
    import numpy as np

    values = [np.asarray(v.numpy()) for v in variables]
    layout = [{"path": v.path, "shape": list(a.shape), "dtype": a.dtype.name} for v, a in zip(variables, values)]
    with h5py.File(path, "w") as f:
        for dtype in sorted({a.dtype.name for a in values}):
            f[dtype] = np.concatenate([a.ravel() for a in values if a.dtype.name == dtype])
        f.attrs["layout"] = json.dumps(layout)
        for key, value in attrs.items():
            f.attrs[key] = value


def read_state(path, variables):
    """Assign the values `write_state` wrote to `path` to `variables`, which must have the shapes
    and dtypes written, in order (names may differ: Keras numbers a process's second `adam`
    `adam_1`); else ValueError naming the first difference."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        layout = json.loads(f.attrs["layout"])
        flat = {dtype: f[dtype][()] for dtype in f.keys()}
    expected = [{"path": v.path, "shape": list(v.shape), "dtype": np.dtype(v.dtype).name} for v in variables]
    written_kinds, expected_kinds = ([(e["shape"], e["dtype"]) for e in entries] for entries in (layout, expected))
    if written_kinds != expected_kinds:
        first = next((k for k, (a, b) in enumerate(zip(written_kinds, expected_kinds)) if a != b), min(len(layout), len(expected)))
        written = layout[first] if first < len(layout) else "nothing"
        wanted = expected[first] if first < len(expected) else "nothing"
        raise ValueError(
            f"The training backup {path} holds another model's state ({len(layout)} variables, the model has {len(expected)}; "
            f"variable {first} is {written}, the model's is {wanted}). Remove its backup/ directory to start this run afresh."
        )
    offsets = dict.fromkeys(flat, 0)
    for variable, entry in zip(variables, layout):
        size, dtype = int(np.prod(entry["shape"], dtype=np.int64)), entry["dtype"]
        variable.assign(flat[dtype][offsets[dtype]: offsets[dtype] + size].reshape(entry["shape"]))
        offsets[dtype] += size


@contextlib.contextmanager
def _without_distribution():
    """Keras variables created inside belong to this process alone."""
    import keras

    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def epoch_batches(images, labels, batch_size, seed, epoch, drop_remainder=False, shift=0):
    """tf.data batches of (float32 images in [0, 1], labels), shuffled by permutation
    (seed, epoch) of the examples, `epoch` a tf.Variable read when each pass starts; with
    `shift`, batch k of an epoch is translated by `pde_zoo.data.random_shift` with the
    stateless seed (seed, epoch·2²⁰ + k).

    A seeded `shuffle(reshuffle_each_iteration=True)` gives pass k the k-th permutation of
    its seed, and Keras opens a different number of passes before the first epoch on one
    device and under MirroredStrategy (measured: other batches, another loss curve), as does
    a run resumed at a later epoch. Here the order (and the shifts) are a function of the
    epoch alone.
    """
    import tensorflow as tf

    from pde_zoo.data import random_shift

    count = len(images)
    images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
    epoch_seed = tf.data.Dataset.range(1).map(lambda _: tf.stack([tf.constant(seed, tf.int64), epoch.read_value()]))

    def permutation(pass_seed):
        keys = tf.random.stateless_uniform([count], seed=pass_seed)
        order = tf.data.Dataset.from_tensor_slices(tf.argsort(keys)).batch(batch_size, drop_remainder=drop_remainder)
        return order.enumerate().map(lambda k, index: (index, tf.stack([pass_seed[0], pass_seed[1] * (1 << 20) + k])))

    def gather(index, batch_seed):
        batch = tf.cast(tf.gather(images, index), tf.float32) / 255.0
        return random_shift(batch, shift, batch_seed), tf.gather(labels, index)

    steps = count // batch_size if drop_remainder else -(-count // batch_size)
    ds = epoch_seed.flat_map(permutation).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def even_batch(examples, parts, cap):
    """The largest batch size <= `cap` that is a multiple of `parts` and divides `examples`
    (every batch, the last included, splits evenly); ValueError when there is none."""
    for size in range(min(cap, examples) - min(cap, examples) % parts, 0, -parts):
        if examples % size == 0:
            return size
    raise ValueError(f"multihost: {examples} test images cannot be split evenly over {parts} devices; pass --test-limit a multiple of {parts}.")
