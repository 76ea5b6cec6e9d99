"""The data layer does not depend on the engine (docs/design.md#module-map): ``NodeData``
lives in ``ecl_jax/node_data.py`` and the old import paths are re-exports."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_LAYER = ["ecl_jax/datasets.py", "ecl_jax/partition.py", "ecl_jax/node_data.py"]


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every module an ``import`` / ``from ... import`` anywhere in the file names (with ``from
    a import b`` also giving ``a.b``, since b may be a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out.add(base)
            out.update(f"{base}.{alias.name}" if node.module else f"{base}{alias.name}" for alias in node.names)
    return out


def _is_engine(module: str) -> bool:
    """``ecl_jax.engine[...]`` or, inside the package, a relative ``.engine[...]``."""
    if module.startswith("."):
        inner = module.lstrip(".")
    elif module.startswith("ecl_jax."):
        inner = module.removeprefix("ecl_jax.")
    else:
        return False
    return inner.split(".")[0] == "engine"


@pytest.mark.parametrize("rel", DATA_LAYER)
def test_data_layer_never_imports_the_engine(rel):
    modules = _imported_modules(ROOT / rel)
    bad = sorted(m for m in modules if _is_engine(m))
    assert not bad, f"{rel} imports the engine: {bad}"


def test_the_check_would_catch_an_engine_import(tmp_path):
    caught = {"import ecl_jax.engine": True, "from ecl_jax import engine": True, "from . import engine": True,
              "from ecl_jax.engine import NodeData": True, "from .engine import Engine": True,
              "def f():\n    from ecl_jax.engine import Engine": True,
              "import ecl_jax.engines": False, "from ecl_jax import node_data": False, "import jax": False}
    for src, want in caught.items():
        path = tmp_path / "m.py"
        path.write_text(src + "\n")
        assert any(_is_engine(m) for m in _imported_modules(path)) == want, src


def test_old_import_paths_are_the_same_objects():
    import ecl_jax
    from ecl_jax import engine, node_data, partition

    assert engine.NodeData is node_data.NodeData is ecl_jax.NodeData is partition.NodeData
    assert engine.stack_node_data is node_data.stack_node_data is ecl_jax.stack_node_data
    d = ecl_jax.stack_node_data([np.zeros((2, 3)), np.ones((1, 3))], [np.zeros(2), np.ones(1)])
    assert type(d) is engine.NodeData and d.count.tolist() == [2, 1] and d.x.shape == (2, 2, 3)
