"""Node-stacked training data: :class:`NodeData` and :func:`stack_node_data`
(docs/design.md#node-stacked-pytrees).

The data layer (``datasets``, ``partition``) builds these and the engine consumes them;
this module imports neither, so data code never pulls in the engine.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.errors import DataError

__all__ = ["NodeData", "stack_node_data", "stack_splits", "check_finite"]


class NodeData(NamedTuple):
    """Node-stacked training data: x [N, M, ...], y [N, M, ...], count [N] (valid rows;
    rows at and beyond ``count[i]`` are padding and never sampled).

    Building one checks nothing (it is a pytree: ``jax.tree_util`` rebuilds it with
    tracers, ``ShapeDtypeStruct`` or any other leaves). :meth:`checked` /
    :meth:`validate` check concrete arrays; :meth:`ecl_jax.engine.Engine.run`,
    :func:`stack_node_data` and :func:`ecl_jax.partition.node_data` call it.
    """

    x: jax.Array
    y: jax.Array
    count: jax.Array

    @classmethod
    def checked(cls, x, y, count) -> NodeData:
        """``NodeData(x, y, count).validate()``."""
        return cls(x, y, count).validate()

    def for_nodes(self, n_nodes: int) -> NodeData:
        """``self`` as device arrays, checked to be stacked over ``n_nodes`` nodes (naming the
        leaf whose leading size differs), then :meth:`validate`; the engine's data check."""
        data = NodeData(*(jnp.asarray(a) for a in self))
        for name, a in zip(self._fields, data):
            if a.ndim and a.shape[0] != n_nodes:
                raise DataError(f"data.{name} has leading size {a.shape[0]}, expected N={n_nodes} nodes")
        if data.x.ndim > 1 and data.y.ndim > 1 and data.x.shape[1] != data.y.shape[1]:
            raise DataError(f"data.x has {data.x.shape[1]} rows per node but data.y has {data.y.shape[1]}")
        return data.validate()

    def validate(self) -> NodeData:
        """Check the stacking and the counts of concrete arrays; return ``self``.

        The leading (node) axes of x, y and count must agree, x and y must hold the same
        number M of rows per node, every ``count[i]`` must be an integer in 1..M, x and y
        must hold numbers (not booleans), and every valid row must be finite (a NaN or
        inf would only surface as NaN losses many steps later). Nothing is checked when a
        leaf is a tracer (inside ``jit`` / ``vmap``); the values only when concrete. Raises :class:`~ecl_jax.errors.DataError` (a
        ``ValueError``) naming the node and the value.
        """
        if any(isinstance(a, jax.core.Tracer) for a in self):
            return self
        shapes = {k: tuple(a.shape) if hasattr(a, "shape") else np.shape(a) for k, a in zip(self._fields, self)}
        for k, rank in (("x", "[N, M, ...]"), ("y", "[N, M, ...]"), ("count", "[N]")):
            bad_rank = len(shapes[k]) != 1 if k == "count" else len(shapes[k]) < 2
            if bad_rank:
                raise DataError(f"NodeData.{k} must be node-stacked {rank}, got shape {shapes[k]}")
        n = {k: s[0] for k, s in shapes.items()}
        if len(set(n.values())) != 1:
            raise DataError(f"NodeData: the leading (node) axes disagree: x has N={n['x']}, y has N={n['y']}, "
                            f"count has N={n['count']}; all three must be stacked over the same N nodes")
        m = shapes["x"][1]
        if shapes["y"][1] != m:
            raise DataError(f"NodeData: x has M={m} rows per node but y has {shapes['y'][1]}; "
                            f"x [N, M, ...] and y [N, M, ...] must be padded to the same M")
        count = self.count
        values = np.asarray(count) if _concrete(count) else None
        dtype = np.dtype(values.dtype if values is not None else count.dtype)
        if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
            raise DataError(f"NodeData.count must hold integers (the number of valid rows of each node), "
                            f"got dtype {dtype}")
        if values is not None:
            bad = np.flatnonzero((values < 1) | (values > m))
            if bad.size:
                i = int(bad[0])
                raise DataError(f"NodeData.count[{i}] = {int(values[i])}: node {i} must have 1..{m} valid rows "
                                f"(count[i] = number of real, unpadded rows among the M={m} padded rows)")
        for k in ("x", "y"):
            a = getattr(self, k)
            if np.dtype(a.dtype) == np.bool_:
                raise DataError(f"NodeData.{k} holds booleans (dtype bool); give numbers: features as floats "
                                f"({k}.astype(np.float32)), labels as integer classes")
            if values is not None and _concrete(a) and np.issubdtype(np.dtype(a.dtype), np.inexact):
                _check_valid_rows_finite(k, a, values)
        return self


def _concrete(a) -> bool:
    """A leaf whose values this process can read (not abstract, traced or partly on other hosts)."""
    return not isinstance(a, (jax.ShapeDtypeStruct, jax.core.Tracer)) and getattr(a, "is_fully_addressable", True)


def _check_valid_rows_finite(name: str, a, count: np.ndarray) -> None:
    """Raise :class:`DataError` naming the first node and row of ``a`` [N, M, ...] among its
    ``count[i]`` valid rows that holds a NaN or inf (computed where ``a`` lives)."""
    a = jnp.asarray(a)
    finite = jnp.isfinite(a).reshape(a.shape[0], a.shape[1], -1).all(axis=-1)  # [N, M]
    bad = ~finite & (jnp.arange(a.shape[1])[None, :] < jnp.asarray(count)[:, None])
    if bool(jnp.any(bad)):
        i, r = (int(v) for v in np.argwhere(np.asarray(bad))[0])
        raise DataError(f"NodeData.{name} holds NaN or inf: node {i}, row {r} (one of its {int(count[i])} "
                        f"valid rows); drop or repair such samples before training")


def check_finite(name: str, tree) -> None:
    """Raise :class:`DataError` if a concrete floating leaf of ``tree`` holds NaN or inf
    (``eval_data`` of :meth:`ecl_jax.engine.Engine.run`), naming the leaf."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if (hasattr(leaf, "dtype") and _concrete(leaf) and np.issubdtype(np.dtype(leaf.dtype), np.inexact)
                and not bool(jnp.all(jnp.isfinite(leaf)))):
            raise DataError(f"{name}{jax.tree_util.keystr(path)} holds NaN or inf; drop or repair those entries")


def stack_node_data(xs, ys) -> NodeData:
    """Pad per-node arrays (lists of [n_i, ...]) to a common length and stack them."""
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"need one x and one y array per node, got {len(xs)} and {len(ys)}")
    counts = np.array([len(x) for x in xs], np.int32)
    if (counts == 0).any():
        raise ValueError(f"node {int(np.flatnonzero(counts == 0)[0])} has no data")
    for i, (x, y) in enumerate(zip(xs, ys)):
        if len(x) != len(y):
            raise ValueError(f"node {i}: {len(x)} inputs but {len(y)} labels")
    m = int(counts.max())

    def pad(a):
        a = np.asarray(a)
        out = np.zeros((m,) + a.shape[1:], a.dtype)
        out[: len(a)] = a
        return out

    return NodeData.checked(np.stack([pad(x) for x in xs]), np.stack([pad(y) for y in ys]), counts)


def stack_splits(splits: list[NodeData]) -> NodeData:
    """Several splits of the same nodes (one per run) padded to one M and stacked on a
    leading run axis: x [R, N, M, ...], y [R, N, M], count [R, N]; one split is returned as is."""
    if len(splits) == 1:
        return splits[0]
    m = max(np.shape(d.x)[1] for d in splits)

    def pad(a):
        a = np.asarray(a)
        return np.pad(a, [(0, 0), (0, m - a.shape[1])] + [(0, 0)] * (a.ndim - 2))

    return NodeData(np.stack([pad(d.x) for d in splits]), np.stack([pad(d.y) for d in splits]),
                    np.stack([np.asarray(d.count) for d in splits]))
