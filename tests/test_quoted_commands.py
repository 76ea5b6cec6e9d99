"""Every command quoted in the docs and docstrings parses as written, so none can rot unseen.

Collected from the code blocks (fenced or indented) and inline code of README.md,
REPRODUCTION.md, BENCHMARKS.md, docs/*.md and notebooks/README.md and from the indented lines of every module docstring under ecl_jax/
and experiments/: each ``ecl-jax ...``, ``python -m ecl_jax ...``, ``python -m experiments.X ...``
and ``python experiments/X.py ...`` line (continuations joined, comments dropped).

* ``ecl-jax run``: parsed by the CLI and resolved to the config it would run
  (``cli.resolve_run``: the experiment file, its overrides, the algorithm options, the run
  folder's name), which validates every field without reading data or training;
* every other command: its own argparse parser accepts the arguments (the script is
  stopped right after parsing).

Commands with placeholders (``FILE``, ``DIR``, ``<graph>``, ``{a,b}``, ``[--set ...]``, ``...``)
are skipped and counted. Running the commands is other tests' work: the README's in
tests/test_readme_commands.py, every experiment's ``--smoke`` in tests/test_reproduction.py,
the notebooks' in tests/test_notebooks.py.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import re
import runpy
import shlex
import sys

import pytest

from ecl_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
PREFIXES = ("ecl-jax ", "python -m ecl_jax ", "python -m experiments.", "python experiments/")
PLACEHOLDER = re.compile(r"\b(FILE|DIR|FOLDER|RUN_DIR|JSON|CONFIG|KEY|VALUE)\b|<[^>]*>|\{[^}]*\}|\[[^\]]*\]|\.\.\.")


def _md_lines(path: pathlib.Path) -> list[str]:
    """Lines of fenced code blocks, indented code blocks, and inline code spans (joined across line ends)."""
    text = path.read_text()
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    lines = [line for block in fenced for line in block.splitlines()]
    prose = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    lines += [line for line in prose.splitlines()
              if line.startswith("    ") and not re.match(r"\s*([-*+|]|\d+\.)\s", line)]  # not a list item
    lines += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    return lines


def _docstring_lines(path: pathlib.Path) -> list[str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return [line for line in doc.splitlines() if line.startswith("    ")]


def _commands(lines: list[str]) -> list[str]:
    """The quoted commands of ``lines``: continuations joined, comments and install steps dropped."""
    out, pending = [], ""
    for raw in lines:
        line = pending + " " + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        pending = ""
        line = line.split("&&")[-1].strip()  # "pip install -e . && ecl-jax run ..."
        line = re.split(r"\s#", line, maxsplit=1)[0].strip()
        if line.startswith(PREFIXES):
            out.append(line)
    return out


def quoted_commands() -> list[tuple[str, str]]:
    """(where, command) for every quoted command of the docs and docstrings."""
    found = []
    docs = [ROOT / n for n in ("README.md", "REPRODUCTION.md", "BENCHMARKS.md")]
    docs += sorted((ROOT / "docs").glob("*.md")) + [ROOT / "notebooks" / "README.md"]
    for path in docs:
        found += [(str(path.relative_to(ROOT)), c) for c in _commands(_md_lines(path))]
    for path in sorted((ROOT / "ecl_jax").rglob("*.py")) + sorted((ROOT / "experiments").rglob("*.py")):
        if "results" in path.parts:
            continue
        found += [(str(path.relative_to(ROOT)), c) for c in _commands(_docstring_lines(path))]
    return found


ALL = quoted_commands()
CHECKED = [(w, c) for w, c in ALL if not PLACEHOLDER.search(c) and not c.startswith("python -m pytest")]


def test_the_collection_finds_the_commands():
    """The collection itself works: the README's main job and the KDD20 subset commands are in it."""
    assert len(CHECKED) >= 45, len(CHECKED)
    commands = {c for _, c in CHECKED}
    assert "ecl-jax run experiments/default.py" in commands
    assert ("ecl-jax run experiments/kdd2020/mnist_round_robin.py --set dataset=mnist5k --set model=mlp "
            "--set name=kdd20_mnist5k_round_robin --set steps=3000") in commands
    assert len(ALL) - len(CHECKED) <= 10, [c for c in ALL if c not in CHECKED]  # placeholders stay rare


class _Parsed(Exception):
    """Raised right after a script's parser accepted its arguments."""


def _parse_only(monkeypatch, run) -> None:
    """Call ``run()`` with every argparse parser stopping the script right after parsing."""
    real = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = real(self, args, namespace)
        if extra:  # what parse_args would say next
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        raise _Parsed(ns)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
    with pytest.raises(_Parsed):
        run()


def _problem(command: str, monkeypatch, capsys) -> str | None:
    """Why ``command`` does not parse (its parser's or the config's message), or None."""
    from ecl_jax.errors import UserError

    monkeypatch.chdir(ROOT)
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "ecl_jax"]:
        words = ["ecl-jax"] + words[3:]
    if words[:2] == ["ecl-jax", "bench"]:
        words = ["python", "-m", "experiments.bench"] + words[2:]
    try:
        if words[0] == "ecl-jax":
            args = cli._parse(words[1:])
            if args.command == "run":
                cli.resolve_run(args)  # ConfigError on any bad field, option or file
            return None
        if words[1] == "-m":
            module, argv = words[2], words[3:]
            monkeypatch.setattr(sys, "argv", [module] + argv)
            monkeypatch.delitem(sys.modules, module, raising=False)  # runpy runs it afresh, without a warning
            _parse_only(monkeypatch, lambda: runpy.run_module(module, run_name="__main__", alter_sys=False))
        else:
            script, argv = ROOT / words[1], words[2:]
            if not script.is_file():
                return f"{script} does not exist"
            monkeypatch.setattr(sys, "argv", [str(script)] + argv)
            monkeypatch.syspath_prepend(str(ROOT))
            _parse_only(monkeypatch, lambda: runpy.run_path(str(script), run_name="__main__"))
    except SystemExit as stop:
        return f"exit {stop.code}: {capsys.readouterr().err.strip()[-800:]}"
    except UserError as err:
        return str(err)
    finally:
        monkeypatch.undo()
    return None


@pytest.mark.parametrize("where, command", CHECKED, ids=[f"{w}: {c[:60]}" for w, c in CHECKED])
def test_quoted_command_parses(where, command, monkeypatch, capsys):
    problem = _problem(command, monkeypatch, capsys)
    assert problem is None, f"{where}: `{command}` does not parse: {problem}"


@pytest.mark.parametrize("command, needle", [
    ("ecl-jax run experiments/default.py --set stpes=3000", "did you mean 'steps'"),
    ("ecl-jax run experiments/default.py --step 3000", "unrecognized arguments"),
    ("ecl-jax run experiments/kdd2020/mnist_rondrobin.py", "does not exist"),
    ("ecl-jax run experiments/default.py --set ecl-pdmm.eat=2", "no option 'eat'"),
    ("ecl-jax bench --quik", "unrecognized arguments"),
    ("python -m experiments.profile_cpu --nodes 3", "unrecognized arguments"),
    ("python experiments/reproduce.py --runz", "unrecognized arguments"),
    ("python experiments/analysis/kdd20_consensus_stability.py --steps many", "invalid int value"),
    ("python experiments/no_such_script.py", "does not exist"),
])
def test_a_rotten_command_is_caught(command, needle, monkeypatch, capsys):
    problem = _problem(command, monkeypatch, capsys)
    assert problem is not None and needle in problem, problem


TIME = re.compile(r"#.*(\d[\d,.]*\s*(s|min|h)\b|not timed)")


def test_every_experiment_command_says_how_long_it_takes():
    """Each ``ecl-jax run`` line of an experiment file's docstring ends with its run time
    (``# ... 4-5 min per algorithm``) or says that it is not timed; a run above 10 min
    also announces itself before it starts (docs/outputs.md#long-runs)."""
    missing = []
    for path in sorted((ROOT / "experiments").rglob("*.py")):
        pending = ""
        for raw in _docstring_lines(path):
            line = pending + " " + raw.strip() if pending else raw.strip()
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1]
                continue
            pending = ""
            if line.startswith("ecl-jax run") and not TIME.search(line):
                missing.append(f"{path.relative_to(ROOT)}: {line}")
    assert not missing, "\n".join(missing)
