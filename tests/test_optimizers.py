"""pde_zoo.optimizers.Adam gives the same numbers as keras.optimizers.Adam."""

import keras
import numpy as np
import pytest

import pde_zoo
from pde_zoo.optimizers import Adam
from numpy_reference import adam as numpy_adam


def adam_case(seed=0, size=500, steps=20):
    """Initial weights and gradients spanning five decades (Adam is scale-free, ε is not)."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=size).astype("float32")
    grads = [(rng.normal(size=size) * 10 ** rng.uniform(-5, 1)).astype("float32") for _ in range(steps)]
    return w0, grads


@pytest.mark.parametrize("optimizer_class", [Adam, keras.optimizers.Adam])
def test_steps_match_numpy_adam(optimizer_class):
    w0, grads = adam_case()
    optimizer = optimizer_class(learning_rate=3e-3, beta_1=0.8, beta_2=0.99)
    variable = keras.Variable(w0)
    optimizer.build([variable])
    got = []
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
        got.append(keras.ops.convert_to_numpy(variable))
    expected = numpy_adam(w0, grads, lr=3e-3, beta_1=0.8, beta_2=0.99)
    np.testing.assert_allclose(np.stack(got), expected, rtol=0, atol=2e-6)  # float32 rounding
    assert np.median(np.abs(expected[-1] - w0)) > 1e-3, "the steps moved the weights"


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_same_training_run_as_keras_adam():
    """The fused kernel rounds differently from Keras's op-by-op update (~1 ulp per step), so a
    short training run agrees to 1e-5, not bitwise."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 64)
    weights = None
    outputs = []
    for optimizer in (keras.optimizers.Adam(3e-3), Adam(3e-3)):
        keras.utils.set_random_seed(0)
        model = pde_zoo.build("pde1", depth=3)
        weights = weights or model.get_weights()
        model.set_weights(weights)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        outputs.append(model.get_weights())
    for a, b in zip(*outputs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not all(np.array_equal(a, b) for a, b in zip(outputs[0], weights)), "training moved the weights"


def test_config_round_trip_and_no_amsgrad():
    opt = Adam(learning_rate=0.01, beta_1=0.8)
    clone = Adam.from_config(opt.get_config())
    assert clone.get_config() == opt.get_config()
    with pytest.raises(ValueError, match="amsgrad"):
        Adam(amsgrad=True)


def _variables_and_gradients(seed=1):
    """Variables of several shapes (one larger than the op's 16384-element chunk) and 4 steps of gradients."""
    rng = np.random.default_rng(seed)
    shapes = [(), (1,), (3, 4), (40000,)] + [(1,)] * 20
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[(rng.normal(size=s) * 10 ** rng.uniform(-4, 1)).astype("float32") for s in shapes] for _ in range(4)]
    return values, grads


def _run_adam(values, grads, monkeypatch=None):
    import tensorflow as tf

    variables = [keras.Variable(v) for v in values]
    optimizer = Adam(learning_rate=2e-3, beta_1=0.85, beta_2=0.995)
    optimizer.build(variables)
    step = tf.function(lambda g: optimizer.apply(g, variables))
    for g in grads:
        step([tf.constant(x) for x in g])
    graph_ops = {op.type for op in step.get_concrete_function([tf.constant(x) for x in grads[0]]).graph.get_operations()}
    return [keras.ops.convert_to_numpy(v) for v in variables], graph_ops


def test_one_op_updates_every_variable_as_resource_apply_adam(monkeypatch):
    """The C++ op (one for all variables) equals TF's ResourceApplyAdam applied variable by variable, and
    both equal the NumPy Adam; the traced step holds the one op and no per-variable update."""
    from pde_zoo.layers import _native, _tf_variables

    if _native.stencil_ops() is None:
        pytest.skip("no C++ compiler here: the native op is not built")
    values, grads = _variables_and_gradients()
    fused, fused_ops = _run_adam(values, grads)
    assert "PdeZooApplyAdam" in fused_ops and "ResourceApplyAdam" not in fused_ops
    monkeypatch.setattr(_tf_variables, "list_ops", lambda variables: None)
    per_variable, per_variable_ops = _run_adam(values, grads)
    assert "ResourceApplyAdam" in per_variable_ops and "PdeZooApplyAdam" not in per_variable_ops
    for a, b, w0, column in zip(fused, per_variable, values, zip(*grads)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        expected = numpy_adam(w0.reshape(-1), [g.reshape(-1) for g in column], lr=2e-3, beta_1=0.85, beta_2=0.995)[-1]
        np.testing.assert_allclose(a.reshape(-1), expected, rtol=0, atol=2e-6)
        assert not np.array_equal(a, w0)


def test_a_read_taken_before_the_update_keeps_its_values():
    """Copy-on-write: a tensor read from a variable before the op updates it in place still holds the old values."""
    import tensorflow as tf

    from pde_zoo.layers import _native

    if _native.stencil_ops() is None:
        pytest.skip("no C++ compiler here: the native op is not built")
    variable = keras.Variable(np.arange(6, dtype="float32"))
    optimizer = Adam(learning_rate=0.5)
    optimizer.build([variable])
    before = variable.value.read_value()  # aliases the variable's buffer until the update
    optimizer.apply([tf.ones(6)], [variable])
    np.testing.assert_array_equal(before.numpy(), np.arange(6, dtype="float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), np.arange(6) - 0.5, atol=1e-5)  # step 1: lr sign(g), up to eps


def test_the_op_rejects_mismatched_shapes_and_slots():
    import tensorflow as tf

    from pde_zoo.layers import _native, _tf_variables

    ops = _native.stencil_ops()
    if ops is None:
        pytest.skip("no C++ compiler here: the native op is not built")
    variable, m, v = (tf.Variable(tf.zeros(3)) for _ in range(3))
    scalars = [tf.constant(x) for x in (0.9, 0.99, 1e-3, 0.9, 0.99, 1e-7)]
    with pytest.raises(tf.errors.InvalidArgumentError, match="variable input 0 has shape \\[3\\] and the gradient \\[4\\]"):
        _tf_variables.apply_adam(ops, [variable], _tf_variables.pack_handles([m, v]), [tf.ones(4)], *scalars)
    with pytest.raises(tf.errors.InvalidArgumentError, match="slots has shape"):
        _tf_variables.apply_adam(ops, [variable], _tf_variables.pack_handles([m]), [tf.ones(3)], *scalars)
    double = tf.Variable(tf.zeros(3, tf.float64))
    assert _tf_variables.list_ops([double]) is None  # float64 keeps TF's per-variable op
    with pytest.raises(tf.errors.InvalidArgumentError, match="is double, not float32"):
        _tf_variables.apply_adam(ops, [double], _tf_variables.pack_handles([m, v]), [tf.ones(3)], *scalars)


def test_the_op_updates_whichever_variables_it_is_given_call_after_call():
    """The op keeps the variables it found from one call to the next (a lookup per handle per step is
    ~0.5 us): other variables through the same kernel, and a variable deleted and made again under the same
    name, are each updated as such, never the variable the op held before. Checked against one Adam step
    done in NumPy."""
    import tensorflow as tf

    from pde_zoo.layers import _native, _tf_variables

    ops = _native.stencil_ops()
    if ops is None:
        pytest.skip("no C++ compiler here: the native op is not built")
    lr, beta_1, beta_2, epsilon = 0.1, 0.9, 0.999, 1e-7
    scalars = [tf.constant(x) for x in (beta_1, beta_2, lr, beta_1, beta_2, epsilon)]  # step 1: beta^1

    def one_step(w, g):  # from zero moments
        m, v = (1 - beta_1) * g, (1 - beta_2) * g * g
        return w - lr * np.sqrt(1 - beta_2) / (1 - beta_1) * m / (np.sqrt(v) + epsilon)

    def update(handles, grads):  # eager calls with the same attributes share one kernel
        slots = [tf.Variable(tf.zeros_like(g)) for g in grads for _ in range(2)]
        ops.pde_zoo_apply_adam(handles, _tf_variables.pack_handles(slots[0::2] + slots[1::2]), grads, *scalars, threads=1)

    rng = np.random.default_rng(3)
    first, second = ([rng.normal(size=3).astype("float32") for _ in range(2)] for _ in range(2))
    a, b = [tf.Variable(w) for w in first], [tf.Variable(w) for w in second]
    g = [tf.constant(rng.normal(size=3).astype("float32")) for _ in range(2)]
    update([v.handle for v in a], g)
    update([v.handle for v in b], g)
    update([v.handle for v in b], g)  # each call starts from zero moments: b takes the first step twice
    for k in range(2):
        np.testing.assert_allclose(a[k].numpy(), one_step(first[k], g[k].numpy()), rtol=1e-6)
        np.testing.assert_allclose(b[k].numpy(), one_step(one_step(second[k], g[k].numpy()), g[k].numpy()), rtol=1e-6)

    # A variable under a fixed name (as graph-mode code makes them), deleted and made again through the same
    # handle tensor: the op must update the new variable.
    handle = tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[3], shared_name="pde_zoo_test_variable", container="")

    def make(value):
        tf.raw_ops.AssignVariableOp(resource=handle, value=value)

    def read():
        return tf.raw_ops.ReadVariableOp(resource=handle, dtype=tf.float32).numpy()

    make(first[0])
    update([handle, a[1].handle], g)
    np.testing.assert_allclose(read(), one_step(first[0], g[0].numpy()), rtol=1e-6)
    tf.raw_ops.DestroyResourceOp(resource=handle)
    make(second[0])
    update([handle, a[1].handle], g)
    np.testing.assert_allclose(read(), one_step(second[0], g[0].numpy()), rtol=1e-6)
    tf.raw_ops.DestroyResourceOp(resource=handle)
