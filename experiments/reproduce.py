"""Ours beside theirs: a Markdown table of final test accuracy / loss per experiment.

    python experiments/reproduce.py                       # every finished run in runs/
    python experiments/reproduce.py --run                 # first run the CPU-sized set
    python experiments/reproduce.py --runs-dir runs experiments/icml2021/fashion_logistic_ring.py

For each experiment file it reads ``<runs-dir>/<CONFIG.name>/`` (metrics.csv, or the
per-algorithm checkpoints of an unfinished run, or final.json alone for stored results
that kept no per-step history) and prints, per algorithm, our final mean test accuracy
and loss, the published value (``CONFIG.published``), the difference, the step reached,
the wall time and where the numbers came from. Other run folders in ``--runs-dir``
(``--set name=...`` variants, e.g. ``experiments/kdd2020/results``) are listed too, with
the published values from their config.json. Notes under the table name every folder
that lacks metrics.csv and why. ``--run`` runs each file first with
``ecl-jax run`` (resuming where checkpoints exist).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CPU_SET = (
    "experiments/icml2021/fashion_logistic_ring.py",
    "experiments/icml2021/fashion_logistic_random.py",
)


def _histories(run_dir: pathlib.Path) -> dict[str, list[dict]]:
    """Per-algorithm metric history from the checkpoints (complete or not)."""
    out = {}
    for ckpt in sorted((run_dir / "checkpoints").glob("*.npz")):
        try:
            with np.load(ckpt, allow_pickle=False) as z:
                out[ckpt.stem] = json.loads(str(z["history"]))
        except (OSError, KeyError, ValueError):
            continue  # unreadable or another format: the runner reports it when resuming
    return out


def _final_only(run_dir: pathlib.Path) -> dict[str, list[dict]]:
    """final.json as one-row histories (stored results that kept no per-step history)."""
    final = json.loads((run_dir / "final.json").read_text())
    return {algo: [{"step": v["step"], "wall_time": v.get("wall_time", float("nan")),
                    "test_acc_node": [v["test_acc_mean"]], "test_loss_node": [v["test_loss_mean"]]}]
            for algo, v in final.items()}


def load_results(run_dir: pathlib.Path) -> tuple[dict[str, list[dict]], str, str]:
    """(histories, source, note) of a run folder.

    metrics.csv (a finished run) first; checkpoints add algorithms it lacks or that got
    further (an unfinished or extended run); final.json alone gives final values only.
    ``note`` says what is missing and why, "" when nothing is.
    """
    from ecl_jax.errors import UserError
    from ecl_jax.plotting import read_metrics_csv

    hist: dict[str, list[dict]] = {}
    sources, notes = [], []
    if (run_dir / "metrics.csv").is_file():
        try:
            hist = dict(read_metrics_csv(run_dir / "metrics.csv"))
            sources.append("metrics.csv")
        except UserError as err:
            notes.append(f"unreadable metrics.csv ({err})")
    for algo, h in _histories(run_dir).items():
        if h and (algo not in hist or h[-1]["step"] > hist[algo][-1]["step"]):
            hist[algo] = h
            if "checkpoints" not in sources:
                sources.append("checkpoints")
    if not hist and (run_dir / "final.json").is_file():
        try:
            hist = _final_only(run_dir)
            sources.append("final.json")
            if not notes:
                notes.append("no metrics.csv: only the final values (final.json) were stored, no per-step history")
            notes.append("`ecl-jax compare` cannot overlay it; `ecl-jax run "
                         f"{run_dir / 'config.json'}` reruns it (into runs/{run_dir.name}/)")
        except (OSError, ValueError, KeyError, TypeError) as err:
            notes.append(f"unreadable final.json ({err})")
    if not hist and not notes:
        notes.append("no metrics.csv, checkpoints or final.json")
    return hist, " + ".join(sources), "; ".join(notes)


def _run_configs(runs_dir: pathlib.Path, known: set[str]) -> list[tuple[str, dict, pathlib.Path]]:
    """Run folders in ``runs_dir`` that no experiment file names (e.g. ``--set name=...`` variants)."""
    out = []
    if not runs_dir.is_dir():
        return out
    for d in sorted(runs_dir.iterdir()):
        if d.name in known or not (d / "config.json").is_file():
            continue
        try:
            cfg = json.loads((d / "config.json").read_text())
        except ValueError:
            continue
        if isinstance(cfg, dict):
            out.append((d.name, cfg, d))
    return out


def table(files: list[str], runs_dir: pathlib.Path) -> str:
    from ecl_jax.config import load_config

    lines = [("| experiment | algorithm | ours acc % | published acc % | diff | ours loss | published loss | "
             "step (round) | wall s | source |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    entries = []
    for f in files:
        config = load_config(f)
        entries.append((config.name, config.published, config.K, runs_dir / config.name))
    for name, cfg, d in _run_configs(runs_dir, {e[0] for e in entries}):
        entries.append((name, cfg.get("published") or {}, cfg.get("K") or 1, d))
    for name, published, K, run_dir in entries:
        if not run_dir.is_dir():
            lines.append(f"| {name} | (not run) | | | | | | | | |")
            continue
        hist, source, note = load_results(run_dir)
        if note:
            notes.append(f"- {run_dir}: {note}")
        if not hist:
            lines.append(f"| {name} | (no results) | | | | | | | | |")
            continue
        pub_acc = published.get("test_acc", {})
        pub_loss = published.get("test_loss", {})
        for algo, h in hist.items():
            last = h[-1]
            acc = 100 * float(np.mean(last["test_acc_node"]))
            loss = float(np.mean(last["test_loss_node"]))
            pa = pub_acc.get(algo)
            pl = pub_loss.get(algo)
            diff = f"{acc - 100 * pa:+.2f}" if pa is not None else ""
            lines.append(
                f"| {name} | {algo} | {acc:.2f} | {'' if pa is None else f'{100 * pa:.2f}'} | {diff} | "
                f"{loss:.3f} | {'' if pl is None else pl} | {last['step']} ({last['step'] / K:.0f}) | "
                f"{last['wall_time']:.0f} | {source} |"
            )
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", help="experiment files (default: every file under experiments/)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--run", action="store_true", help="run the CPU-sized set first (ICML21 logistic, both graphs)")
    args = p.parse_args(argv)
    files = args.files or sorted(str(x) for d in ("kdd2020", "icml2021", "scale")
                                 for x in (ROOT / "experiments" / d).glob("*.py"))
    if args.run:
        for f in args.files or CPU_SET:
            subprocess.run([sys.executable, "-m", "ecl_jax", "run", f, "--set", f"out_dir={args.runs_dir}"], check=True)
    print(table(files, pathlib.Path(args.runs_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
