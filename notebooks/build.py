"""Generate the example notebooks (``NN_*.ipynb``) from their jupytext sources (``NN_*.py``).

    python notebooks/build.py            # rewrite every NN_*.ipynb from its NN_*.py
    python notebooks/build.py --check    # exit 1 if a committed .ipynb differs from its source

The ``.py`` files (jupytext "percent" format: ``# %%`` code cells, ``# %% [markdown]``
cells) are the sources: edit those, then regenerate. Works offline (needs ``jupytext``,
in the ``test`` extra). The written notebooks have no outputs and are deterministic: the
notebook metadata is fixed (no jupytext metadata) and each cell id is derived from the
cell's content, so regenerating an unchanged source gives the same bytes.
``tests/test_notebooks.py`` executes the notebooks and checks they match their sources.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys

import jupytext
import nbformat

HERE = pathlib.Path(__file__).resolve().parent
METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}


def sources() -> list[pathlib.Path]:
    """The notebook sources in this folder (``NN_name.py``; not this script)."""
    return sorted(HERE.glob("[0-9][0-9]_*.py"))


def render(source: pathlib.Path) -> str:
    """The .ipynb text (nbformat 4, no outputs) generated from one percent-format source."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = nbformat.from_dict(METADATA)
    seen: set[str] = set()
    for cell in nb.cells:
        cell.metadata = nbformat.NotebookNode()
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        digest = hashlib.sha1(f"{cell.cell_type}\0{cell.source}".encode()).hexdigest()
        cell_id = digest[:8]
        n = 1
        while cell_id in seen:  # identical cells: keep ids unique
            cell_id, n = f"{digest[:8]}-{n}", n + 1
        seen.add(cell_id)
        cell.id = cell_id
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"  # nbformat.write's trailing newline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale .ipynb files (exit 1 if any)")
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        target = source.with_suffix(".ipynb")
        text = render(source)
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print("wrote", target.relative_to(HERE.parent))
    if stale:
        print("out of date (run python notebooks/build.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
