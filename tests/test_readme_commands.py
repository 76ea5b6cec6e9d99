"""The README's commands run in order on a fresh clone: the main job, then every line of
"Runs from the command line", at smoke sizes (step counts divided by 75), as real
subprocesses in a fresh folder. No command may rewrite another command's run folder."""

from __future__ import annotations

import hashlib
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _blocks(text: str, heading: str) -> list[str]:
    section = text.split(heading, 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def _commands(block: str) -> list[list[str]]:
    out = []
    for line in block.splitlines():
        line = line.split("  #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if "&&" in line:  # "pip install -e . && ecl-jax run ...": the install is done already
            line = line.split("&&")[-1].strip()
        words = shlex.split(line)
        if words[:1] == ["ecl-jax"]:
            words = [sys.executable, "-m", "ecl_jax"] + words[1:]
        elif words[:3] == ["python", "-m", "ecl_jax"]:
            words = [sys.executable] + words[1:]
        else:
            continue
        if "run" in words and "--smoke" not in words:
            steps = [i for i, w in enumerate(words) if w.startswith("steps=")]
            for i in steps:
                words[i] = f"steps={max(10, int(words[i].split('=')[1]) // 75)}"
            if not steps:
                words += ["--set", "steps=20"]
            words.append("--quiet")
        out.append(words)
    return out


def _digest(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path):
    text = (ROOT / "README.md").read_text()
    main_job = _commands(_blocks(text, "## Two commands")[0])[0]
    runs_block = _commands(_blocks(text, "## Runs from the command line")[0])
    assert len(runs_block) >= 6
    (tmp_path / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "default.py", tmp_path / "experiments" / "default.py")
    seen: dict[str, dict] = {}
    for words in [main_job] + runs_block:
        res = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, (words, res.stderr[-3000:])
        runs = tmp_path / "runs"
        now = {d.name: _digest(d) for d in runs.iterdir() if d.is_dir()}
        changed = [name for name, files in seen.items() if now.get(name) != files]
        extends_default = "default" in seen and any(w.startswith("steps=") for w in words) and not any(
            w.startswith(("n_nodes", "ecl-pdmm", "algorithms")) for w in words
        ) and "--smoke" not in words
        if extends_default:  # "--set steps=3000": continues runs/default and only it
            assert changed == ["default"], (words, changed)
        elif "compare" not in words:
            assert changed == [], (words, changed)  # a run never rewrites another run's folder
        seen = now
    assert (tmp_path / "runs" / "cmp").is_dir()
    expected = {"default", "default__n_nodes-32_topology-torus", "default_smoke", "cmp",
                "default__algorithms-ecl-pdmm+pdmm-isvr+dsgd+gradient-tracking+centralized",
                "default__ecl-pdmm.eta-2.0_edge_schedule-slots-K-8"}
    assert expected <= set(seen), sorted(seen)
    import json

    final = json.loads((tmp_path / "runs" / "default" / "final.json").read_text())
    assert final["ecl-pdmm"]["step"] == 3000 // 75  # extended from 20 to 40 steps


def _printed_block(text: str) -> list[str]:
    """The README's block of what the main job prints (the code block after "What the first command prints")."""
    section = text.split("What the first command prints", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    return block.strip().splitlines()


def _without_times(lines: list[str]) -> list[str]:
    """The lines with each algorithm's wall time (", 42.7s)") blanked: the only figure that is machine time."""
    return [re.sub(r", \d+(\.\d+)?s\)", ", <time>)", line.rstrip()) for line in lines]


@pytest.mark.slow
@pytest.mark.xdist_group("readme_main_job")
def test_readme_shows_what_the_main_job_prints(tmp_path):
    """The main job at full size (1,500 steps, 4 algorithms; about 1 min on a 2-core Zen 5 VM):
    every accuracy, worst node and test loss the README quotes is what it prints, digit for digit."""
    text = (ROOT / "README.md").read_text()
    want = _printed_block(text)
    main_job = _commands(_blocks(text, "## Two commands")[0])[0]
    assert main_job[-5:] == ["run", "experiments/default.py", "--set", "steps=20", "--quiet"]  # as shortened
    (tmp_path / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "default.py", tmp_path / "experiments" / "default.py")
    res = subprocess.run(main_job[:-3] + ["--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    got = res.stdout.strip().splitlines()[: len(want)]
    assert _without_times(got) == _without_times(want), "\n".join(["README:"] + want + ["printed:"] + got)
