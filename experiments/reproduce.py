"""Ours beside theirs: a Markdown table of final test accuracy / loss per experiment.

    python experiments/reproduce.py                       # every finished run in runs/
    python experiments/reproduce.py --run                 # first run the CPU-sized set
    python experiments/reproduce.py --runs-dir runs experiments/icml2021/fashion_logistic_ring.py

For each experiment file it reads ``<runs-dir>/<CONFIG.name>/`` (metrics.csv, or the
per-algorithm checkpoints of an unfinished run) and prints, per algorithm, our final
mean test accuracy and loss, the published value (``CONFIG.published``), the
difference, the step reached and the wall time. ``--run`` runs each file first with
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
        with np.load(ckpt, allow_pickle=False) as z:
            out[ckpt.stem] = json.loads(str(z["history"]))
    return out


def table(files: list[str], runs_dir: pathlib.Path) -> str:
    from ecl_jax.config import load_config

    lines = ["| experiment | algorithm | ours acc % | published acc % | diff | ours loss | published loss | step (round) | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f in files:
        config = load_config(f)
        hist = _histories(runs_dir / config.name)
        if not hist:
            lines.append(f"| {config.name} | (not run) | | | | | | | |")
            continue
        pub_acc = config.published.get("test_acc", {})
        pub_loss = config.published.get("test_loss", {})
        for algo, h in hist.items():
            last = h[-1]
            acc = 100 * float(np.mean(last["test_acc_node"]))
            loss = float(np.mean(last["test_loss_node"]))
            pa = pub_acc.get(algo)
            pl = pub_loss.get(algo)
            diff = f"{acc - 100 * pa:+.2f}" if pa is not None else ""
            lines.append(
                f"| {config.name} | {algo} | {acc:.2f} | {'' if pa is None else f'{100 * pa:.2f}'} | {diff} | "
                f"{loss:.3f} | {'' if pl is None else pl} | {last['step']} ({last['step'] / config.K:.0f}) | "
                f"{last['wall_time']:.0f} |"
            )
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
