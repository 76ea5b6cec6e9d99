"""Per-edge layouts: how values on the directed edges of a graph are stored (one class per file).

* :class:`SlotLayout` (``"slots"``): [N, D, ...], slot s of node i its s-th neighbour;
* :class:`EdgeListLayout` (``"edges"``): [2E, ...] in CSR order, no padding;
* :class:`ShiftLayout` (``"shift"``): [N, D, ...] by grid offset, static rolls (rings, tori,
  circulant graphs).

``"auto"`` (:func:`choose`) picks the fastest correct one: shift where the graph allows it,
else slots when padding adds at most 25 % to 2E, else the edge list. The protocol is
:class:`EdgeLayout` (docs/design.md#per-edge-layouts).
"""

from __future__ import annotations

from typing import Any

from ecl_jax.errors import TopologyError
from ecl_jax.layouts.base import EdgeLayout, expand
from ecl_jax.layouts.edges import EdgeListLayout
from ecl_jax.layouts.shift import ShiftLayout, find_shift_offsets
from ecl_jax.layouts.slots import SlotLayout

__all__ = [
    "EdgeLayout",
    "SlotLayout",
    "EdgeListLayout",
    "ShiftLayout",
    "LAYOUTS",
    "LAYOUT_NAMES",
    "choose",
    "build",
    "expand",
    "find_shift_offsets",
]

#: The concrete layouts by name.
LAYOUTS: dict[str, type[EdgeLayout]] = {"shift": ShiftLayout, "slots": SlotLayout, "edges": EdgeListLayout}
#: Every accepted ``layout=`` value ("fast" is the older name of "auto").
LAYOUT_NAMES: tuple[str, ...] = ("auto", "shift", "slots", "edges", "fast")


def choose(name: str, topology: Any) -> str:
    """The concrete layout ``name`` stands for on ``topology`` ("auto"/"fast" resolved)."""
    if name in ("auto", "fast"):
        if topology.supports_shift:
            return "shift"
        padded = topology.n_nodes * topology.max_degree
        return "slots" if padded <= 1.25 * topology.n_directed else "edges"
    if name not in LAYOUTS:
        raise TopologyError(f"layout must be one of {', '.join(repr(x) for x in LAYOUT_NAMES)}, got {name!r}")
    return name


def build(name: str, topology: Any) -> EdgeLayout:
    """The layout ``name`` (after :func:`choose`) built for ``topology``'s graph arrays."""
    return LAYOUTS[choose(name, topology)](topology)
