"""Tests of ecl_jax.models: exact parameter counts, shapes with a node axis, dropout,
GroupNorm-only normalisation, losses against NumPy, initialisers, name errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from ecl_jax import models as M

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)


def _np_ce(logits, y):
    logits = np.asarray(logits, np.float64)
    m = logits.max(1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
    return lse - logits[np.arange(len(y)), y]


def _np_leaves(params):
    return [np.asarray(w, np.float64) for w in jax.tree_util.tree_leaves(params)]


# --------------------------------------------------------------------------
# Parameter counts (hand-computed layer by layer in the comments;
# docs/reproduction_setups.md#kdd20-models, #icml21-models)
# --------------------------------------------------------------------------

# ResNet-32 (option A shortcuts), layer by layer: stem conv 3*16*9 + GN 2*16;
# stage widths c_in -> c: first block 9*c_in*c + 9*c*c + 4*c, then 4 blocks of 18*c*c + 4*c;
# fc 64*10 + 10.
_RESNET32 = (3 * 16 * 9 + 32
             + sum(9 * ci * c + 9 * c * c + 4 * c + 4 * (18 * c * c + 4 * c)
                   for ci, c in [(16, 16), (16, 32), (32, 64)])
             + 650)
# ICML21 ResNet-34 layout: stem 7*7*3*64 + GN 128; blocks as above with no conv bias;
# projection 1x1 conv + GN on stages 2-4; fc 512*10+10.
_ICML21 = (7 * 7 * 3 * 64 + 128
           + sum(9 * ci * c + 9 * c * c + 4 * c + (ci * c + 2 * c if ci != c else 0) + (n - 1) * (18 * c * c + 4 * c)
                 for ci, c, n in [(64, 64, 3), (64, 128, 4), (128, 256, 6), (256, 512, 3)])
           + 5130)


@pytest.mark.parametrize(
    "name, shape, expected",
    [
        ("logistic", MNIST, 7_850),
        ("mlp", MNIST, 784 * 256 + 256 + 2570),
        ("kdd20_mnist_cnn", MNIST, 1_199_882),
        ("kdd20_cifar_cnn", CIFAR, 2_196_490),
        ("resnet32_gn", CIFAR, 464_154),
        ("icml21_resnet", CIFAR, 21_289_802),
    ],
)
def test_param_counts_exact(name, shape, expected):
    count = M.param_count(M.abstract_params(M.get_model(name), shape))
    assert count == expected
    # the docstring states the count
    doc = type(M.get_model(name)).__doc__
    assert f"{expected:,}" in doc


@pytest.mark.slow
def test_param_counts_match_layer_arithmetic():
    assert _RESNET32 == 464_154
    assert abs(_ICML21 - 21.29e6) < 0.005e6
    assert M.param_count(M.abstract_params(M.get_model("icml21_resnet"), CIFAR)) == _ICML21
    # 1-channel input changes only the 7x7 stem: 7*7*(3-1)*64 fewer
    assert M.param_count(M.abstract_params(M.get_model("icml21_resnet"), MNIST)) == _ICML21 - 7 * 7 * 2 * 64
    # shortcut B adds 1x1 projections + GN: 16*32 + 2*32 + 32*64 + 2*64
    assert M.param_count(M.abstract_params(M.get_model("resnet32_gn", shortcut="B"), CIFAR)) == 464_154 + 2752
    # logistic regression in general: (D + 1) * C
    assert M.param_count(M.abstract_params(M.get_model("logistic", num_classes=7), (5, 3))) == 16 * 7


def _module_calls(model, shape, deterministic=True):
    """(module, kwargs) of every module __call__ during an abstract forward pass."""
    calls = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            calls.append((context.module, dict(kwargs)))
        return next_fun(*args, **kwargs)

    x = jnp.zeros((1,) + shape)
    with nn.intercept_methods(record):
        variables = jax.eval_shape(lambda k: model.init(k, x), jax.random.PRNGKey(0))
    if not deterministic:
        calls.clear()
        with nn.intercept_methods(record):
            jax.eval_shape(
                lambda v, k: model.apply(v, x, deterministic=False, rngs={"dropout": k}),
                variables, jax.random.PRNGKey(1),
            )
    return calls, variables


@pytest.mark.parametrize(
    "name, shape, groups",
    [
        ("logistic", MNIST, []),
        ("mlp", MNIST, []),
        ("kdd20_mnist_cnn", MNIST, []),
        ("kdd20_cifar_cnn", CIFAR, [1, 2, 2, 2]),
        ("resnet32_gn", CIFAR, [1] + [1] * 10 + [2] * 10 + [4] * 10),
        ("icml21_resnet", CIFAR, [2] + [2] * 6 + [4] * 9 + [8] * 13 + [16] * 7),
    ],
)
def test_groupnorm_only_no_batchnorm(name, shape, groups):
    calls, variables = _module_calls(M.get_model(name), shape)
    kinds = [type(m).__name__ for m, _ in calls]
    assert not any("BatchNorm" in k for k in kinds)
    assert set(variables) == {"params"}  # no batch_stats collection
    assert [m.num_groups for m, _ in calls if isinstance(m, nn.GroupNorm)] == groups
    assert all(m.epsilon == 1e-5 for m, _ in calls if isinstance(m, nn.GroupNorm))


def test_resnet_depths():
    calls, _ = _module_calls(M.get_model("resnet32_gn"), CIFAR)
    convs = [m for m, _ in calls if isinstance(m, nn.Conv)]
    dense = [m for m, _ in calls if isinstance(m, nn.Dense)]
    assert len(convs) + len(dense) == 32  # 1 + 6*5 convs + fc; option A: no projection convs
    calls, _ = _module_calls(M.get_model("icml21_resnet"), CIFAR)
    convs = [m for m, _ in calls if isinstance(m, nn.Conv)]
    assert len(convs) == 1 + 2 * (3 + 4 + 6 + 3) + 3  # stem, blocks, 3 projection shortcuts
    assert convs[0].kernel_size == (7, 7) and convs[0].strides == (2, 2) and not convs[0].use_bias


@pytest.mark.slow
def test_icml21_dropout_structure_and_output_shape():
    model = M.get_model("icml21_resnet")
    calls, variables = _module_calls(model, CIFAR, deterministic=False)
    drops = [(m, kw) for m, kw in calls if isinstance(m, nn.Dropout)]
    assert [(m.rate, tuple(m.broadcast_dims)) for m, _ in drops] == [(0.1, (1, 2))] * 4 + [(0.5, ())]
    assert all(kw.get("deterministic") is False for _, kw in drops)
    calls, _ = _module_calls(model, CIFAR, deterministic=True)
    assert all(kw.get("deterministic") is True for m, kw in calls if isinstance(m, nn.Dropout))
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2,) + CIFAR)), variables)
    assert out.shape == (2, 10)


# --------------------------------------------------------------------------
# Forward passes with a node axis
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_cnn():
    """KDD20 MNIST net and one node's params (shared: its init compiles once)."""
    model = M.get_model("kdd20_mnist_cnn")
    params = M.init_node_params(model, jax.random.PRNGKey(0), 1, MNIST)
    return model, jax.tree_util.tree_map(lambda w: w[0], params)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, shape", [("logistic", MNIST), ("mlp", MNIST), ("kdd20_mnist_cnn", MNIST), ("kdd20_cifar_cnn", CIFAR)]
)
def test_node_axis_shapes(name, shape):
    n, b = 3, 2
    model = M.get_model(name)
    params = M.init_node_params(model, jax.random.PRNGKey(0), n, shape)
    one = M.param_count(params, node_axis=True)
    assert M.param_count(params) == n * one
    assert all(w.shape[0] == n for w in jax.tree_util.tree_leaves(params))
    x = jax.random.normal(jax.random.PRNGKey(1), (n, b) + shape)
    y = jnp.array([[0, 1], [2, 3], [4, 5]])
    loss = M.classification_loss(model)

    @jax.jit
    def forward(params, x, y):
        logits = jax.vmap(M.predict_logits(model))(params, x)
        same = jax.vmap(M.predict_logits(model), in_axes=(0, None))(params, x[0])
        return logits, same, jax.vmap(loss, in_axes=(0, 0, 0, None))(params, x, y, None)

    logits, same, per_ex = forward(params, x, y)
    assert logits.shape == (n, b, 10) and per_ex.shape == (n, b)
    assert bool(jnp.all(jnp.isfinite(logits)))
    np.testing.assert_allclose(per_ex, _np_ce(logits.reshape(n * b, 10), np.asarray(y).ravel()).reshape(n, b),
                               rtol=1e-4, atol=1e-5)
    # the same init on every node: identical logits for identical inputs
    np.testing.assert_allclose(same[1], same[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(same[2], same[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_node_axis_grads_as_engine(name):
    """vmap(grad) over the node axis with per-node dropout keys, as Engine does."""
    n = 3
    model = M.get_model(name)
    params = M.init_node_params(model, jax.random.PRNGKey(0), n, MNIST, same_init=False)
    x = jax.random.normal(jax.random.PRNGKey(1), (n, 4) + MNIST)
    y = jnp.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]])
    loss = M.classification_loss(model, l2=0.01)
    node_grad = jax.grad(lambda p, x, y, r: loss(p, x, y, r).mean())
    grads = jax.jit(jax.vmap(node_grad))(params, x, y, jax.random.split(jax.random.PRNGKey(3), n))
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    single = jax.jit(lambda p, x, y: node_grad(p, x, y, None))
    for i in range(n):  # node i's gradient = the unstacked gradient of node i
        g_i = single(jax.tree_util.tree_map(lambda w: w[i], params), x[i], y[i])
        for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(g_i)):
            np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_resnet32_gn_forward():
    """Forward on 2 images with random params of the right shapes (the init itself is
    covered by the eval_shape tests; a real ResNet init compile costs seconds)."""
    model = M.get_model("resnet32_gn")
    shapes = M.abstract_params(model, CIFAR)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), jnp.float32), shapes)
    x = jax.random.normal(jax.random.PRNGKey(1), (2,) + CIFAR)
    logits = jax.jit(M.predict_logits(model))(params, x)
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
    assert not np.allclose(logits[0], logits[1])  # depends on the input


@pytest.mark.slow
def test_flatten_and_channel_axis(mnist_cnn):
    model = M.get_model("logistic")
    p = jax.tree_util.tree_map(lambda w: w[0], M.init_node_params(model, jax.random.PRNGKey(0), 1, MNIST))
    x = jax.random.normal(jax.random.PRNGKey(1), (4,) + MNIST)
    f = M.predict_logits(model)
    np.testing.assert_allclose(f(p, x), f(p, x.reshape(4, 784)), rtol=1e-6, atol=1e-6)
    w, b = np.asarray(p["fc"]["kernel"]), np.asarray(p["fc"]["bias"])
    np.testing.assert_allclose(f(p, x), np.asarray(x).reshape(4, 784) @ w + b, rtol=1e-4, atol=1e-4)
    cnn, pc = mnist_cnn
    g = jax.jit(M.predict_logits(cnn))
    np.testing.assert_allclose(g(pc, x[..., 0]), g(pc, x), rtol=1e-6)
    with pytest.raises(ValueError, match="784"):
        g(pc, x.reshape(4, 784))


# --------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_dropout_active_only_with_rng(mnist_cnn):
    model, p = mnist_cnn
    x = jax.random.normal(jax.random.PRNGKey(1), (4,) + MNIST)
    y = jnp.array([1, 2, 3, 4])
    loss = jax.jit(M.classification_loss(model))
    det = np.asarray(loss(p, x, y, None))
    np.testing.assert_array_equal(np.asarray(loss(p, x, y, None)), det)
    np.testing.assert_allclose(
        det, np.asarray(M.classification_loss(model)(p, x, y)), rtol=1e-6
    )
    a = np.asarray(loss(p, x, y, jax.random.PRNGKey(5)))
    a2 = np.asarray(loss(p, x, y, jax.random.PRNGKey(5)))
    b = np.asarray(loss(p, x, y, jax.random.PRNGKey(6)))
    np.testing.assert_array_equal(a, a2)  # reproducible given the key
    assert not np.allclose(a, det)
    assert not np.allclose(a, b)


def test_kdd20_mnist_channel_dropout_mask(mnist_cnn):
    """First dropout is Dropout2d: each (example, channel) map is all dropped or all
    kept (x 1/(1-p)); the second is element-wise."""
    model, p = mnist_cnn
    x = jax.random.normal(jax.random.PRNGKey(1), (4,) + MNIST)

    @jax.jit
    def dropout_io(p, x, key):
        seen = []

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, nn.Dropout):
                seen.append((args[0], out))
            return out

        with nn.intercept_methods(record):
            model.apply({"params": p}, x, deterministic=False, rngs={"dropout": key})
        return seen

    (x1, o1), (x2, o2) = jax.tree_util.tree_map(np.asarray, dropout_io(p, x, jax.random.PRNGKey(3)))
    assert x1.shape == (4, 12, 12, 64) and x2.shape == (4, 128)
    kept = np.all(np.isclose(o1, 2.0 * x1), axis=(1, 2))
    dropped = np.all(o1 == 0.0, axis=(1, 2))
    informative = np.any(x1 != 0.0, axis=(1, 2))  # ReLU maps that are all zero are ambiguous
    assert np.all((kept | dropped)[informative])
    frac = dropped[informative].mean()
    assert 0.35 < frac < 0.65
    nz = x2 != 0
    kept2 = np.isclose(o2, 2.0 * x2) & nz
    assert 0.35 < kept2[nz].mean() < 0.65
    # element-wise: some example/feature rows mix kept and dropped units
    assert np.any(kept2.any(axis=1) & (~kept2 & nz).any(axis=1))


# --------------------------------------------------------------------------
# Losses, accuracy, training
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_loss_and_l2_against_numpy():
    model = M.get_model("mlp")
    p = jax.tree_util.tree_map(lambda w: w[0], M.init_node_params(model, jax.random.PRNGKey(0), 1, MNIST))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 784))
    y = np.array([0, 3, 9, 2, 2])
    logits = M.predict_logits(model)(p, x)
    # independent forward in NumPy
    h = np.maximum(np.asarray(x) @ np.asarray(p["fc1"]["kernel"]) + np.asarray(p["fc1"]["bias"]), 0)
    np.testing.assert_allclose(logits, h @ np.asarray(p["fc2"]["kernel"]) + np.asarray(p["fc2"]["bias"]), atol=1e-5)
    ce = _np_ce(logits, y)
    np.testing.assert_allclose(M.classification_loss(model)(p, x, y, None), ce, rtol=1e-5)
    l2 = 0.01
    sq = sum(float((w**2).sum()) for w in _np_leaves(p))
    np.testing.assert_allclose(M.classification_loss(model, l2=l2)(p, x, y, None), ce + 0.5 * l2 * sq, rtol=1e-5)
    with pytest.raises(ValueError, match="l2"):
        M.classification_loss(model, l2=-1.0)
    acc = M.accuracy_fn(model)(p, x, y)
    np.testing.assert_array_equal(acc, (np.asarray(logits).argmax(1) == y).astype(np.float32))
    assert acc.dtype == jnp.float32


@pytest.mark.slow
@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_sgd_decreases_loss(name):
    model = M.get_model(name)
    p = jax.tree_util.tree_map(lambda w: w[0], M.init_node_params(model, jax.random.PRNGKey(0), 1, MNIST))
    x = jax.random.normal(jax.random.PRNGKey(1), (8,) + MNIST)
    y = jnp.arange(8) % 10
    loss = M.classification_loss(model, l2=1e-3)
    obj = jax.jit(lambda p: loss(p, x, y, None).mean())
    step = jax.jit(lambda p: jax.tree_util.tree_map(lambda w, g: w - 0.05 * g, p, jax.grad(obj)(p)))
    values = [float(obj(p))]
    for _ in range(10):
        p = step(p)
        values.append(float(obj(p)))
    assert all(b < a for a, b in zip(values, values[1:]))
    assert values[-1] < 0.5 * values[0]
    assert float(M.accuracy_fn(model)(p, x, y).mean()) == 1.0


# --------------------------------------------------------------------------
# Initialisation, helpers, errors
# --------------------------------------------------------------------------


def test_init_node_params_same_and_independent():
    # (logistic, MNIST-shaped, N = 3: the same shapes as other tests, so cached compiles)
    model = M.get_model("logistic")
    same = M.init_node_params(model, jax.random.PRNGKey(0), 3, MNIST)
    diff = M.init_node_params(model, jax.random.PRNGKey(0), 3, MNIST, same_init=False)
    for w in jax.tree_util.tree_leaves(same):
        assert w.shape[0] == 3
        for i in range(1, 3):
            np.testing.assert_array_equal(w[i], w[0])
    for w in jax.tree_util.tree_leaves(diff):
        assert w.shape[0] == 3 and not np.allclose(w[1], w[0]) and not np.allclose(w[2], w[1])
    assert M.param_count(same, node_axis=True) == 7850
    assert M.param_count(diff) == 3 * 7850
    with pytest.raises(ValueError, match="n_nodes"):
        M.init_node_params(model, jax.random.PRNGKey(0), 0, (5,))
    with pytest.raises(ValueError, match="input_shape"):
        M.init_node_params(model, jax.random.PRNGKey(0), 2, 5)
    with pytest.raises(ValueError, match="leading"):
        M.param_count({"a": jnp.zeros((2, 3)), "b": jnp.zeros((3, 3))}, node_axis=True)


def test_pytorch_style_initialisers(mnist_cnn):
    p = jax.tree_util.tree_map(np.asarray, mnist_cnn[1])
    # kaiming_normal_: N(0, 2/fan_in), untruncated (tails beyond 2 sd present)
    w = p["fc1"]["kernel"]
    sd = math.sqrt(2.0 / 9216)
    assert abs(w.std() / sd - 1) < 0.01 and abs(w.mean()) < 0.01 * sd
    assert np.abs(w).max() > 3 * sd
    # torch default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = 32*3*3 for conv2
    b = p["conv2"]["bias"]
    bound = 1 / math.sqrt(32 * 9)
    assert np.all(np.abs(b) <= bound) and np.abs(b).max() > 0.7 * bound
    # logistic: torch default Linear (weights and biases uniform in +-1/sqrt(784))
    lg = M.get_model("logistic")
    q = jax.tree_util.tree_map(lambda w: np.asarray(w[0]), M.init_node_params(lg, jax.random.PRNGKey(0), 1, MNIST))
    for a in (q["fc"]["kernel"], q["fc"]["bias"]):
        assert np.all(np.abs(a) <= 1 / 28) and np.abs(a).max() > 0.7 / 28
    assert abs(q["fc"]["kernel"].std() - 1 / 28 / math.sqrt(3)) < 0.03 / 28


def test_get_model_names_and_errors():
    assert set(M.MODEL_NAMES) == {
        "logistic", "mlp", "kdd20_mnist_cnn", "kdd20_cifar_cnn", "resnet32_gn", "icml21_resnet"
    }
    for name in M.MODEL_NAMES:
        assert M.get_model(name, num_classes=7).num_classes == 7
    assert isinstance(M.get_model("ICML21-ResNet"), M.ICML21ResNet)
    with pytest.raises(ValueError) as err:
        M.get_model("resnet50")
    assert "resnet50" in str(err.value) and all(n in str(err.value) for n in M.MODEL_NAMES)
    with pytest.raises(ValueError, match="hidden"):
        M.get_model("logistic", hidden=(3,))
    with pytest.raises(ValueError, match="num_classes"):
        M.get_model("mlp", num_classes=0)
    out = jax.eval_shape(
        lambda k: M.get_model("mlp", num_classes=3, hidden=(4, 5)).init_with_output(k, jnp.zeros((2, 6)))[0],
        jax.random.PRNGKey(0),
    )
    assert out.shape == (2, 3)
