"""Hyperparameters as data: one compiled program for a grid of settings (docs/design.md#sweeps).

An algorithm fixes its hyperparameters when it is built (Python numbers, validated there).
:func:`inject_hyperparams` builds it again inside the trace from values carried in its state,
as optax's ``inject_hyperparams`` does for an optimiser, so the vmap over the runs of a batch
(``Engine(runs=R)``) gives every run its own lr, eta, ...::

    alg   = inject_hyperparams(ecl_pdmm)(lr=0.05, eta=1.0)  # build(**kwargs) -> Algorithm
    state = alg.init(params, topology)                      # HyperState({"lr": 0.05, "eta": 1.0}, inner)
    state = set_hyperparams(state, {"eta": 2.0})            # e.g. per run: Engine.init(..., hyperparams=)
    state = alg.step(state, grads, topology, ...)           # = ecl_pdmm(lr=0.05, eta=2.0).step(inner, ...)

Float keyword arguments are injected; ints, bools, strings and callables stay static (they
pick code paths and shapes). A value may not change the program: :func:`check_sweep` refuses
an option whose values give states of other shapes (rho 0 and 0.5, momentum 0 and 0.9) or that
the builder needs as a Python number.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.algorithms.base import Algorithm
from ecl_jax.topology import Topology

__all__ = ["HyperState", "inject_hyperparams", "set_hyperparams", "check_sweep"]


class HyperState(NamedTuple):
    """The state of an injected algorithm: its hyperparameters (a dict of scalars, one
    value per run in a batch) and the state of the rule built from them."""

    hyperparams: dict
    inner: Any


def _injected(value: Any) -> bool:
    """A float hyperparameter (Python, NumPy or a 0-d JAX float), not an int, bool or string."""
    if isinstance(value, (float, np.floating)):
        return True
    return isinstance(value, jax.Array) and value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.floating)


def inject_hyperparams(build: Callable[..., Algorithm], static_args: Sequence[str] = ()) -> Callable[..., Algorithm]:
    """``make(**kwargs) -> Algorithm``: ``build(**kwargs)`` with its float arguments (those
    not named in ``static_args``) held in the state (:class:`HyperState`) and read as traced
    values by every step: ``step(state) = build(**static, **state.hyperparams).step(state.inner)``.

    ``build(**kwargs)`` is called once with the given numbers (so bad values are refused as
    usual) and gives the name, the config shown in logs and the initial inner state.
    """

    def make(**kwargs) -> Algorithm:
        names = [k for k, v in kwargs.items() if k not in static_args and _injected(v)]
        if not names:
            raise ValueError(f"inject_hyperparams: no float argument to inject among {sorted(kwargs)}; "
                             "pass the hyperparameters as floats (lr=0.05), or build the algorithm directly")
        static = {k: v for k, v in kwargs.items() if k not in names}
        template = build(**kwargs)
        rebuilt = lambda hyper: build(**static, **hyper)

        def init(params, topology: Topology) -> HyperState:
            return HyperState({k: jnp.asarray(kwargs[k], _float()) for k in names}, template.init(params, topology))

        def step(state: HyperState, grads, topology: Topology, edge_active, node_active) -> HyperState:
            inner = rebuilt(state.hyperparams).step(state.inner, grads, topology, edge_active, node_active)
            return HyperState(state.hyperparams, inner)

        def node_params(state: HyperState):
            return rebuilt(state.hyperparams).node_params(state.inner)

        return Algorithm(template.name, init, step, node_params, template.config, template.messages)

    return make


def _float():
    return jnp.asarray(0.0).dtype  # float32, or float64 with jax_enable_x64


def set_hyperparams(state: HyperState, values: Mapping[str, Any]) -> HyperState:
    """``state`` with the injected hyperparameters in ``values`` replaced (each a scalar,
    cast to the stored dtype). Raises naming a value the algorithm does not inject."""
    if not isinstance(state, HyperState):
        raise TypeError(f"hyperparameters can be set only in the state of an algorithm built with "
                        f"inject_hyperparams; this state is a {type(state).__name__}")
    unknown = sorted(set(values) - set(state.hyperparams))
    if unknown:
        raise ValueError(f"hyperparameters {unknown} are not injected; this algorithm injects "
                         f"{sorted(state.hyperparams)}")
    new = dict(state.hyperparams)
    for k, v in values.items():
        v = jnp.asarray(v, new[k].dtype)
        if v.shape != new[k].shape:
            raise ValueError(f"hyperparameter {k} must be a scalar per run, got shape {v.shape}")
        new[k] = v
    return HyperState(new, state.inner)


def check_sweep(build: Callable[..., Algorithm], points: Sequence[dict], params, topology: Topology) -> None:
    """Refuse a grid that is not one program: ``points`` are the grid's keyword arguments of
    ``build`` (each point the same keys, the swept ones floats). Builds every point (its own
    value checks), then, per swept option, the algorithm with that option traced; raises
    ValueError naming the option when the builder needs it as a Python number or when two of
    its values give states of different shapes (e.g. rho 0, where no received models are kept,
    and rho 0.5). ``params`` are node-stacked (shapes are all that is read)."""
    swept = [k for k in points[0] if len({float(p[k]) for p in points if _injected(p[k])}) > 1]
    shapes = [jax.eval_shape(lambda w, a=build(**p): a.init(w, topology), params) for p in points]

    def signature(tree):  # the program's view of a state: its structure, every leaf's shape and dtype
        return jax.tree_util.tree_structure(tree), [(x.shape, x.dtype) for x in jax.tree_util.tree_leaves(tree)]

    for k in swept:
        def traced_init(value, params, k=k):
            return build(**dict(points[0], **{k: value})).init(params, topology)

        try:
            traced = jax.eval_shape(traced_init, jnp.asarray(float(points[0][k]), _float()), params)
        except (ValueError, TypeError, jax.errors.ConcretizationTypeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{k} cannot be swept in one program: the algorithm needs it as a Python number "
                             f"when it is built ({first[:160]}); run its values as separate runs") from None
        for p, s in zip(points, shapes):
            if signature(s) != signature(traced):
                raise ValueError(f"{k}={p[k]:g} changes the program's shape (its state differs from that of a "
                                 f"traced {k}, e.g. a part kept only for some values: "
                                 f"{str(jax.tree_util.tree_structure(s))[:120]}); "
                                 f"sweep values that give the same program or run them as separate runs")
