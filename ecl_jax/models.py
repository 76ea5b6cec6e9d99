"""Flax models of the two papers' code, and functional helpers for node-stacked params.

Every model is a ``flax.linen`` module called as ``model.apply({"params": p}, x,
deterministic=...)`` on NHWC float images ``x [B, H, W, C]`` (``[B, H, W]`` gets a
channel axis; the logistic model and the MLP flatten whatever they get). Dropout draws
from the ``'dropout'`` rng and is off when ``deterministic=True`` (the default). There is
no BatchNorm anywhere: node data differ, so batch statistics would differ per node
(ICML21 README); the normalised models use GroupNorm (eps 1e-5 as PyTorch).

Models (parameter counts for 10 classes; MNIST-shaped = 28x28x1, CIFAR-shaped = 32x32x3):

=====================  ==============================================  ============
name                   model                                           parameters
=====================  ==============================================  ============
``logistic``           :class:`LogisticRegression` (ICML21 code)       7,850 (MNIST)
``mlp``                :class:`MLP` 784-256-10                         203,530 (MNIST)
``kdd20_mnist_cnn``    :class:`KDD20MnistCNN` (KDD20 code, MNIST)      1,199,882
``kdd20_cifar_cnn``    :class:`KDD20CifarCNN` (KDD20 code, CIFAR-10)   2,196,490
``resnet32_gn``        :class:`ResNet32GN` (He et al. 2016, CIFAR)     464,154
``icml21_resnet``      :class:`ICML21ResNet` (ICML21 "resnet32")       21,289,802
=====================  ==============================================  ============

Initialisation follows the source code of each model (PyTorch conventions, see
``docs/reproduction_setups.md#kdd20-models`` / ``#icml21-models``): PyTorch's default
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases unless the code says
otherwise; the KDD20 nets use ``kaiming_normal_`` (``N(0, 2/fan_in)``) for their weights.

Helpers (one node's *unstacked* params unless stated): :func:`get_model`,
:func:`init_node_params` (stacked, leading node axis), :func:`classification_loss`
(``loss_fn(params, x, y, rng) -> [B]`` as :class:`ecl_jax.engine.Engine` expects),
:func:`accuracy_fn`, :func:`predict_logits`, :func:`param_count`, :func:`abstract_params`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from ecl_jax import tuning
from ecl_jax.validation import check_int

__all__ = [
    "LogisticRegression",
    "MLP",
    "KDD20MnistCNN",
    "KDD20CifarCNN",
    "ResNet32GN",
    "ICML21ResNet",
    "MODEL_NAMES",
    "get_model",
    "init_node_params",
    "abstract_params",
    "classification_loss",
    "accuracy_fn",
    "predict_logits",
    "param_count",
    "sq_norm",
    "max_pool",
    "mixed_precision",
]

Params = Any
_GN_EPS = 1e-5  # torch.nn.GroupNorm default

# --------------------------------------------------------------------------
# Initialisers (PyTorch conventions)
# --------------------------------------------------------------------------

#: PyTorch's default Linear/Conv weight init, kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
#: ``torch.nn.init.kaiming_normal_`` defaults (a=0, fan_in): N(0, 2/fan_in), untruncated.
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def torch_default_bias(fan_in: int) -> Callable:
    """PyTorch's default bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _dense(x, features: int, name: str, kernel_init=torch_default_kernel):
    """Linear layer with PyTorch-style bias init (fan_in read from ``x``)."""
    return nn.Dense(features, kernel_init=kernel_init, bias_init=torch_default_bias(x.shape[-1]), name=name)(x)


def _conv(x, features: int, kernel: int, name: str, *, stride: int = 1, padding: int = 0,
          use_bias: bool = True, kernel_init=torch_default_kernel):
    """``nn.Conv2d(in, features, kernel, stride, padding)`` in NHWC with PyTorch's explicit
    symmetric zero padding (not XLA 'SAME', which pads asymmetrically at stride 2)."""
    fan_in = x.shape[-1] * kernel * kernel
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), padding=((padding, padding), (padding, padding)),
        use_bias=use_bias, kernel_init=kernel_init, bias_init=torch_default_bias(fan_in), name=name,
    )(x)


def _group_norm(x, num_groups: int, name: str):
    return nn.GroupNorm(num_groups=num_groups, epsilon=_GN_EPS, name=name)(x)


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """Max over ``window x window`` patches of NHWC ``x`` every ``stride`` pixels, ``padding``
    pixels of -inf on each side (PyTorch's ``MaxPool2d(window, stride, padding)``, floor mode).

    With :mod:`ecl_jax.tuning`'s ``reduce_pool`` on (the default) it is written as a reshape
    and a max (``window == stride``, no padding) or a max of ``window**2`` strided slices,
    whose gradient is a few elementwise selects; off (``ECL_JAX_REDUCE_POOL=0``) it is
    ``flax.linen.max_pool`` (XLA's reduce-window, differentiated by select-and-scatter, which
    took 38 ms per 100 KDD20-CNN activations against 3 ms on CPU; docs/performance.md#cpu-speed-settings).
    The values are identical; the gradient differs only at ties inside a window, which
    follow a ReLU only as zeros, where the ReLU's gradient is zero anyway.
    """
    if not tuning.enabled("reduce_pool"):
        pad = ((padding, padding), (padding, padding))
        return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pad)
    b, h, w, c = x.shape
    if padding == 0 and window == stride:
        ho, wo = h // window, w // window
        x = x[:, : ho * window, : wo * window, :]
        return x.reshape(b, ho, window, wo, window, c).max(axis=(2, 4))
    if padding:
        pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
        x = jnp.pad(x, pad, constant_values=-jnp.inf)
    ho = (h + 2 * padding - window) // stride + 1
    wo = (w + 2 * padding - window) // stride + 1
    out = None
    for i in range(window):
        for j in range(window):
            patch = x[:, i: i + stride * (ho - 1) + 1: stride, j: j + stride * (wo - 1) + 1: stride, :]
            out = patch if out is None else jnp.maximum(out, patch)
    return out


def _as_images(x, model: str) -> jax.Array:
    """NHWC float images; ``[B, H, W]`` gets a trailing channel axis."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{model} expects images [B, H, W, C] or [B, H, W], got shape {tuple(x.shape)}")
    return x


def _flat(x) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if x.ndim < 2:
        raise ValueError(f"expected a batch [B, ...], got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one Dense on the flattened input (ICML21
    ``model/logistics.py``, ``Linear(784, 10)``). 7,850 parameters on 28x28x1 input
    (784*10 + 10); (D+1)*num_classes in general. PyTorch default init."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        return _dense(_flat(x), self.num_classes, "fc")


class MLP(nn.Module):
    """Fully connected ReLU network on the flattened input, default 784-256-10:
    203,530 parameters on 28x28x1 input (784*256+256 + 256*10+10). PyTorch default init.
    Not in either paper; a cheap non-convex model for tests and small runs."""

    hidden: Sequence[int] = (256,)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = _flat(x)
        for i, h in enumerate(self.hidden):
            x = nn.relu(_dense(x, h, f"fc{i + 1}"))
        return _dense(x, self.num_classes, f"fc{len(self.hidden) + 1}")


class KDD20MnistCNN(nn.Module):
    """KDD20 code's MNIST net (``eclsample/run_mnist.py``; docs/reproduction_setups.md#kdd20-models).

    conv3x3(1->32, VALID) ReLU, conv3x3(32->64, VALID) ReLU, maxpool 2, Dropout2d(0.5)
    (channel dropout: one draw per (example, channel), broadcast over H, W), flatten,
    fc 9216->128 ReLU, dropout 0.5 (element-wise: PyTorch's Dropout2d on a 2-D tensor of
    that era), fc 128->10. **1,199,882 parameters** on 28x28x1 input
    (320 + 18,496 + 1,179,776 + 1,290). Weights kaiming_normal_, biases PyTorch default.
    (The flatten is H,W,C-ordered rather than PyTorch's C,H,W: same function class.)
    """

    num_classes: int = 10
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = _as_images(x, "KDD20MnistCNN")
        x = nn.relu(_conv(x, 32, 3, "conv1", kernel_init=kaiming_normal))
        x = nn.relu(_conv(x, 64, 3, "conv2", kernel_init=kaiming_normal))
        x = max_pool(x, 2, 2)
        x = nn.Dropout(self.dropout, broadcast_dims=(1, 2))(x, deterministic=deterministic)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(_dense(x, 128, "fc1", kernel_init=kaiming_normal))
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        return _dense(x, self.num_classes, "fc2", kernel_init=kaiming_normal)


class KDD20CifarCNN(nn.Module):
    """KDD20 code's CIFAR-10 net (``eclsample/run_cifar10.py``; docs/reproduction_setups.md#kdd20-models).

    [conv3x3(3->32, pad 1)+GN(1 group)+ReLU, conv3x3(32->64, pad 1)+GN(2)+ReLU, maxpool 2,
    Dropout(0.25)] -> [conv3x3(64->64, pad 1)+GN(2)+ReLU x2, maxpool 2, Dropout(0.25)]
    -> fc 4096->512 ReLU, Dropout(0.5) -> fc 512->10. All convs keep the size (padding 1),
    so 32x32 input reaches the fc as 8*8*64 = 4096. **2,196,490 parameters** on 32x32x3
    input: convs 896 + 18,496 + 36,928 + 36,928, GroupNorm affine 64 + 3*128,
    fc 2,097,664 + 5,130. Dropout is element-wise (``nn.Dropout``). Weights
    kaiming_normal_, biases PyTorch default, GroupNorm scale 1 / bias 0.
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = _as_images(x, "KDD20CifarCNN")
        k = kaiming_normal
        x = nn.relu(_group_norm(_conv(x, 32, 3, "conv1", padding=1, kernel_init=k), 1, "gn1"))
        x = nn.relu(_group_norm(_conv(x, 64, 3, "conv2", padding=1, kernel_init=k), 2, "gn2"))
        x = max_pool(x, 2, 2)
        x = nn.Dropout(0.25)(x, deterministic=deterministic)
        x = nn.relu(_group_norm(_conv(x, 64, 3, "conv3", padding=1, kernel_init=k), 2, "gn3"))
        x = nn.relu(_group_norm(_conv(x, 64, 3, "conv4", padding=1, kernel_init=k), 2, "gn4"))
        x = max_pool(x, 2, 2)
        x = nn.Dropout(0.25)(x, deterministic=deterministic)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(_dense(x, 512, "fc1", kernel_init=k))
        x = nn.Dropout(0.5)(x, deterministic=deterministic)
        return _dense(x, self.num_classes, "fc2", kernel_init=k)


class _BasicBlockGN(nn.Module):
    """ResNet BasicBlock (He et al. 2016) with GroupNorm: conv3x3(stride)-GN-ReLU-
    conv3x3-GN, plus shortcut, ReLU. Convs have no bias.

    shortcut "A": parameter-free (subsample by the stride, zero-pad new channels);
    "B": 1x1 conv (stride) + GroupNorm projection when the shape changes (torchvision,
    ICML21 code). Identity otherwise.
    """

    features: int
    stride: int
    groups: int
    shortcut: str
    kernel_init: Callable

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        y = _conv(x, self.features, 3, "conv1", stride=self.stride, padding=1, use_bias=False,
                  kernel_init=self.kernel_init)
        y = nn.relu(_group_norm(y, self.groups, "gn1"))
        y = _conv(y, self.features, 3, "conv2", padding=1, use_bias=False, kernel_init=self.kernel_init)
        y = _group_norm(y, self.groups, "gn2")
        if self.stride != 1 or c_in != self.features:
            if self.shortcut == "A":
                x = x[:, :: self.stride, :: self.stride, :]
                lo = (self.features - c_in) // 2
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (lo, self.features - c_in - lo)))
            else:
                x = _conv(x, self.features, 1, "down_conv", stride=self.stride, use_bias=False,
                          kernel_init=self.kernel_init)
                x = _group_norm(x, self.groups, "down_gn")
        return nn.relu(y + x)


def _ceil_groups(channels: int, group_channels: int) -> int:
    return (channels + group_channels - 1) // group_channels


class ResNet32GN(nn.Module):
    """The true CIFAR ResNet-32 of He et al. 2016 (§4.2), GroupNorm instead of BatchNorm.

    conv3x3 16 (no bias) + GN + ReLU; 3 stages x 5 BasicBlocks with 16/32/64 channels
    (stride 2 at the first block of stages 2 and 3); global average pool; fc 64->10.
    Depth 6*5+2 = 32. GroupNorm groups = ceil(C/group_channels), default 16 channels per
    group (1/2/4 groups; the ICML21 code's rule with 16 instead of 32, since 16-channel
    layers would otherwise be plain LayerNorm-like single groups everywhere).

    Shortcut option **A** by default (as He et al. on CIFAR: identity, stride-2
    subsampling and zero-padded channels, parameter-free): **464,154 parameters** on
    32x32x3 input (stem 432 + 32, stages 23,360 + 88,192 + 351,488, fc 650) -- the
    "0.46 M" of the paper. ``shortcut="B"`` (1x1 conv + GN projections) gives 466,906.
    Weights kaiming_normal_ (fan_in), fc bias PyTorch default, as the common PyTorch
    port (akamaster/pytorch_resnet_cifar10).
    """

    num_classes: int = 10
    blocks_per_stage: int = 5
    widths: Sequence[int] = (16, 32, 64)
    group_channels: int = 16
    shortcut: str = "A"

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        if self.shortcut not in ("A", "B"):
            raise ValueError(f"ResNet32GN shortcut must be 'A' or 'B', got {self.shortcut!r}")
        x = _as_images(x, "ResNet32GN")
        k = kaiming_normal
        x = _conv(x, self.widths[0], 3, "conv1", padding=1, use_bias=False, kernel_init=k)
        x = nn.relu(_group_norm(x, _ceil_groups(self.widths[0], self.group_channels), "gn1"))
        for s, width in enumerate(self.widths):
            for b in range(self.blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                x = _BasicBlockGN(width, stride, _ceil_groups(width, self.group_channels), self.shortcut, k,
                                  name=f"stage{s + 1}_block{b + 1}")(x)
        x = x.mean(axis=(1, 2))
        return _dense(x, self.num_classes, "fc", kernel_init=k)


class ICML21ResNet(nn.Module):
    """The ICML21 code's "resnet32" (``model/resnet.py``, docs/reproduction_setups.md#icml21-models):
    really the ImageNet ResNet-34 layout with GroupNorm and dropout.

    conv7x7 stride 2 pad 3 (64, no bias) + GN + ReLU, maxpool 3x3 stride 2 pad 1,
    Dropout2d(drop_rate); BasicBlock stages [3, 4, 6, 3] with 64/128/256/512 channels
    (stride 2 from stage 2 on; 1x1 conv + GN projection shortcuts), each of stages 1-3
    followed by Dropout2d(drop_rate) (channel dropout, broadcast over H, W); global
    average pool, Dropout(last_drop_rate), fc 512->10. GroupNorm groups
    ceil(C/group_channels) = 2/4/8/16 for the code's group_channels=32. Defaults
    drop_rate 0.1, last_drop_rate 0.5 (``main.py``). **21,289,802 parameters** on
    3-channel input (21,283,530 on 1-channel input: the stem has 7*7*C_in*64 weights).
    PyTorch default init (the code's custom init is commented out).
    """

    num_classes: int = 10
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    widths: Sequence[int] = (64, 128, 256, 512)
    group_channels: int = 32
    drop_rate: float = 0.1
    last_drop_rate: float = 0.5

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = _as_images(x, "ICML21ResNet")
        g = lambda c: _ceil_groups(c, self.group_channels)  # noqa: E731
        x = _conv(x, 64, 7, "conv1", stride=2, padding=3, use_bias=False)
        x = nn.relu(_group_norm(x, g(64), "gn1"))
        x = max_pool(x, 3, 2, padding=1)
        if self.drop_rate > 0:
            x = nn.Dropout(self.drop_rate, broadcast_dims=(1, 2))(x, deterministic=deterministic)
        n_stages = len(self.stage_sizes)
        for s, (n_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for b in range(n_blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                x = _BasicBlockGN(width, stride, g(width), "B", torch_default_kernel,
                                  name=f"stage{s + 1}_block{b + 1}")(x)
            if self.drop_rate > 0 and s < n_stages - 1:
                x = nn.Dropout(self.drop_rate, broadcast_dims=(1, 2))(x, deterministic=deterministic)
        x = x.mean(axis=(1, 2))
        if self.last_drop_rate > 0:
            x = nn.Dropout(self.last_drop_rate)(x, deterministic=deterministic)
        return _dense(x, self.num_classes, "fc")


# --------------------------------------------------------------------------
# Functional helpers
# --------------------------------------------------------------------------

_MODELS: dict[str, type[nn.Module]] = {
    "logistic": LogisticRegression,
    "mlp": MLP,
    "kdd20_mnist_cnn": KDD20MnistCNN,
    "kdd20_cifar_cnn": KDD20CifarCNN,
    "resnet32_gn": ResNet32GN,
    "icml21_resnet": ICML21ResNet,
}
MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)


def get_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Model by name (see :data:`MODEL_NAMES`); ``kwargs`` go to the module's fields."""
    key = str(name).lower().replace("-", "_")
    if key not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    check_int("num_classes", num_classes, minimum=1)
    cls = _MODELS[key]
    fields = [f for f in cls.__dataclass_fields__ if f not in ("parent", "name")]
    bad = sorted(set(kwargs) - set(fields))
    if bad:
        raise ValueError(f"model {key!r} has no option(s) {bad}; valid: {fields}")
    return cls(num_classes=int(num_classes), **kwargs)


def _dummy_input(input_shape) -> jax.ShapeDtypeStruct:
    try:
        shape = tuple(int(d) for d in input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a tuple of ints (one example, no batch axis), got {input_shape!r}")
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    return jax.ShapeDtypeStruct((1,) + shape, jnp.float32)


def abstract_params(model: nn.Module, input_shape) -> Params:
    """Shapes/dtypes of one node's params (``jax.eval_shape``: nothing allocated)."""
    x = _dummy_input(input_shape)
    return jax.eval_shape(lambda k: model.init(k, jnp.zeros(x.shape, x.dtype))["params"], jax.random.PRNGKey(0))


def init_node_params(model: nn.Module, key: jax.Array, n_nodes: int, input_shape, same_init: bool = True) -> Params:
    """Params with a leading node axis [N, ...] on every leaf.

    ``input_shape`` is one example's shape (no batch axis), e.g. (28, 28, 1).
    ``same_init=True``: every node starts from the same model (both papers' code seed
    the model init identically on all nodes); ``False``: independent inits from
    ``split(key, N)``.
    """
    check_int("n_nodes", n_nodes, minimum=1)
    x = _dummy_input(input_shape)

    def init(k):
        return model.init({"params": k}, jnp.zeros(x.shape, x.dtype))["params"]

    # Not jitted: op-by-op init reuses cached primitive compilations (much cheaper than
    # compiling a whole ResNet init once; the init forward runs on one example only).
    if same_init:
        p = init(key)
        return jax.tree_util.tree_map(lambda w: jnp.broadcast_to(w, (n_nodes,) + w.shape).copy(), p)
    return jax.vmap(init)(jax.random.split(key, n_nodes))


def _logits(model: nn.Module, params, x, rng=None):
    if rng is None:
        return model.apply({"params": params}, x, deterministic=True)
    return model.apply({"params": params}, x, deterministic=False, rngs={"dropout": rng})


def sq_norm(params) -> jax.Array:
    """||params||^2 over all leaves."""
    return sum(jnp.sum(jnp.square(w)) for w in jax.tree_util.tree_leaves(params))


def mixed_precision(loss_fn: Callable[..., jax.Array], compute_dtype: Any = jnp.bfloat16) -> Callable[..., jax.Array]:
    """Mixed precision: run ``loss_fn`` with float params and inputs cast to
    ``compute_dtype`` (bfloat16 by default); losses come back as float32.

    Params, gradients (the cast's transpose returns them in the params' dtype) and all
    algorithm state stay float32, so only the forward/backward pass is low precision::

        Engine(algorithm, topology, mixed_precision(loss_fn), ...)
    """
    dt = jnp.dtype(compute_dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"compute_dtype must be a floating dtype such as bfloat16, got {compute_dtype!r}")

    def cast(a):
        return a.astype(dt) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a

    def wrapped(params, x, y, rng=None):
        losses = loss_fn(jax.tree_util.tree_map(cast, params), cast(x), y, rng)
        return losses.astype(jnp.float32)

    return wrapped


def classification_loss(model: nn.Module, l2: float = 0.0) -> Callable:
    """``loss_fn(params, x, y, rng) -> [B]``: softmax cross-entropy of integer labels
    ``y`` for one node's params, plus ``0.5 * l2 * ||params||^2`` on every example (the
    ICML21 scripts' L2 over all parameters, GroupNorm and biases included, so the batch
    mean carries it once). Dropout is on iff ``rng`` (a PRNG key) is not None."""
    l2 = float(l2)
    if not l2 >= 0.0:
        raise ValueError(f"l2 must be >= 0, got {l2}")

    def loss_fn(params, x, y, rng=None):
        logits = _logits(model, params, x, rng)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y).astype(jnp.int32))
        if l2 > 0.0:
            ce = ce + 0.5 * l2 * sq_norm(params).astype(ce.dtype)
        return ce

    return loss_fn


def predict_logits(model: nn.Module) -> Callable:
    """``fn(params, x) -> logits [B, num_classes]`` (dropout off)."""
    return lambda params, x: _logits(model, params, x)


def accuracy_fn(model: nn.Module) -> Callable:
    """``fn(params, x, y) -> [B]`` float 1.0 where argmax of the logits equals ``y``."""

    def fn(params, x, y):
        pred = jnp.argmax(_logits(model, params, x), axis=-1)
        return (pred == jnp.asarray(y)).astype(jnp.float32)

    return fn


def param_count(params, node_axis: bool = False) -> int:
    """Number of scalars in ``params`` (arrays or ShapeDtypeStructs); with
    ``node_axis=True`` the leading node axis is excluded (one node's count)."""
    leaves = jax.tree_util.tree_leaves(params)
    if node_axis:
        lead = {tuple(leaf.shape[:1]) for leaf in leaves}
        if len(lead) > 1 or any(len(leaf.shape) == 0 for leaf in leaves):
            raise ValueError(
                f"node_axis=True needs one common leading axis on every leaf, got leading dims {sorted(lead)}"
            )
        return int(sum(int(np.prod(leaf.shape[1:])) for leaf in leaves))
    return int(sum(int(np.prod(leaf.shape)) for leaf in leaves))
