"""Matplotlib figures of runs: accuracy, loss and consensus distance vs epoch.

Curves are the mean over nodes with a band from the worst to the best node, the
figure researchers draw to compare ECL with gossip and the centralised reference.
"""

from __future__ import annotations

import csv
import pathlib
from typing import Iterable

import numpy as np

__all__ = ["plot_run", "plot_histories", "compare_runs", "read_metrics_csv"]

_STYLE = {
    "centralized": dict(color="black", linestyle="--"),
    "ecl-pdmm": dict(color="tab:blue"),
    "ecl-admm": dict(color="tab:orange"),
    "pdmm-isvr": dict(color="tab:green"),
    "admm-isvr": dict(color="tab:red"),
    "gossip": dict(color="tab:purple"),
    "pairwise-gossip": dict(color="tab:pink"),
    "dsgd": dict(color="tab:brown"),
    "gradient-tracking": dict(color="tab:olive"),
    "local": dict(color="tab:gray", linestyle=":"),
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_XLABEL = {
    "epoch": "epoch (samples per node / local data size)",
    "round": "round (K local steps)",
    "step": "step",
}


def _series(history: list[dict], key: str, x_axis: str = "epoch"):
    x = np.array([r[x_axis] for r in history])
    vals = [r.get(key) for r in history]
    if any(v is None for v in vals):
        return None
    arr = [np.atleast_1d(np.asarray(v, float)) for v in vals]
    return x, np.array([a.mean() for a in arr]), np.array([a.min() for a in arr]), np.array([a.max() for a in arr])


def plot_histories(histories: dict[str, list[dict]], key: str, ylabel: str, path: pathlib.Path,
                   title: str = "", log: bool = False, label_suffix: str = "",
                   x_axis: str = "epoch", reference: dict[str, float] | None = None) -> pathlib.Path | None:
    """One figure of ``key`` vs epoch for every algorithm; None when no run has ``key``.

    ``reference``: {algorithm: published final value}, drawn as thin dashed lines in
    the algorithm's colour (ours beside theirs)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    drawn = False
    for name, hist in histories.items():
        s = _series(hist, key, x_axis)
        if s is None:
            continue
        x, mean, lo, hi = s
        base = name.split("/")[-1]
        style = _STYLE.get(base, {})
        ax.plot(x, mean, label=name + label_suffix, **style)
        if (hi - lo).max() > 0:
            ax.fill_between(x, lo, hi, alpha=0.15, color=style.get("color"))
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for name, value in (reference or {}).items():
        color = _STYLE.get(name, {}).get("color", "gray")
        ax.axhline(float(value), color=color, linestyle=(0, (2, 2)), linewidth=0.9, alpha=0.8,
                   label=f"{name} (published)")
    ax.set_xlabel(_XLABEL[x_axis])
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_run(run_dir: pathlib.Path, histories: dict[str, list[dict]], title: str = "",
             x_axis: str = "epoch", published: dict | None = None) -> list[pathlib.Path]:
    """accuracy.png, loss.png, consensus.png in ``run_dir`` (mean over nodes, min-max band).

    ``published``: {"test_acc": {algo: value}, "test_loss": {algo: value}} reference lines."""
    run_dir = pathlib.Path(run_dir)
    kw = dict(title=title, x_axis=x_axis)
    published = published or {}
    out = [
        plot_histories(histories, "test_acc_node", "test accuracy (mean over nodes)", run_dir / "accuracy.png",
                       reference=published.get("test_acc"), **kw),
        plot_histories(histories, "test_loss_node", "test cross-entropy (mean over nodes)", run_dir / "loss.png",
                       reference=published.get("test_loss"), **kw),
        plot_histories(histories, "consensus_distance", "consensus distance (1/N) sum ||w_i - w_bar||^2",
                       run_dir / "consensus.png", log=True, **kw),
    ]
    return [p for p in out if p is not None]


def read_metrics_csv(path: pathlib.Path) -> dict[str, list[dict]]:
    """metrics.csv -> {algorithm: history rows} with per-node columns regrouped into lists."""
    histories: dict[str, list[dict]] = {}
    with open(path) as fh:
        for r in csv.DictReader(fh):
            row: dict = {"epoch": float(r["epoch"]), "step": int(float(r["step"])), "round": float(r.get("round") or 0)}
            groups: dict[str, dict[int, float]] = {}
            for k, v in r.items():
                if v in ("", None) or k in ("algorithm", "epoch", "step", "round"):
                    continue
                head, _, idx = k.rpartition("_")
                if idx.isdigit() and head.endswith("_node"):
                    groups.setdefault(head, {})[int(idx)] = float(v)
                else:
                    try:
                        row[k] = float(v)
                    except ValueError:
                        row[k] = v
            for head, d in groups.items():
                row[head] = [d[i] for i in sorted(d)]
            histories.setdefault(r["algorithm"], []).append(row)
    return histories


def compare_runs(run_dirs: Iterable[str | pathlib.Path], out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """Overlay finished runs (their metrics.csv) in ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged: dict[str, list[dict]] = {}
    for d in run_dirs:
        d = pathlib.Path(d)
        f = d / "metrics.csv"
        if not f.is_file():
            raise FileNotFoundError(f"{d} has no metrics.csv (is it a finished run folder?)")
        for algo, hist in read_metrics_csv(f).items():
            merged[f"{d.name}/{algo}"] = hist
    return plot_run(out_dir, merged, title="comparison")
