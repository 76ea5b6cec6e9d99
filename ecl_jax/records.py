"""What a run writes down (docs/design.md#run-folders-and-checkpoints): history rows,
``metrics.csv``, ``final.json``, ``split.txt`` / ``split.csv`` and ``config.json``.

Every file goes through :func:`ecl_jax.run_folder.atomic_write_text`, so a reader never
sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
from typing import Any

import numpy as np

from ecl_jax import run_folder

__all__ = ["history_row", "line_name", "lines", "last_points", "summarize", "write_metrics_csv", "write_final", "write_split", "write_config"]


def history_row(metrics: dict, algo: str, config: Any, mean_count: float, wall: float,
                tags: dict | None = None, message_bytes: int | None = None) -> dict:
    """One metric point as a JSON-friendly row: step, epoch (local steps * batch / mean node
    size), round (local steps / K), samples seen, wall time, then every metric (per-node ones
    as lists; ``node_loss`` / ``mean_model_loss`` renamed ``train_loss_node`` /
    ``mean_model_train_loss``). Local steps are the step in lockstep and, under a free-running
    runtime (step = tick), the mean over nodes of their own steps (metric ``local_steps``).
    ``tags``: a run's place in a batch (columns after ``algorithm``): ``run`` (a sweep's
    point as text, ``eta=0.5 lr=0.1``), ``seed``, and each swept value under its option's name.
    Communication so far (metrics ``messages_sent`` / ``messages_received`` [N], with
    ``message_bytes`` the bytes of one message): ``messages_sent_mean``, ``messages_sent_max``,
    ``bytes_sent_mean``, ``bytes_sent_max`` and the same for received (mean and max over nodes)."""
    step = int(metrics["step"])
    own = np.asarray(metrics["local_steps"], np.float64) if "local_steps" in metrics else np.full(config.n_nodes, step)
    row = {
        "step": step,
        "epoch": float(own.mean()) * config.batch_size / mean_count,
        "round": float(own.mean()) / config.K,
        "algorithm": algo,
        **(tags or {}),
        "samples_seen": int(own.sum()) * config.batch_size,
        "wall_time": wall,
    }
    for way in ("sent", "received"):
        if f"messages_{way}" in metrics:
            count = np.asarray(metrics[f"messages_{way}"], np.int64)
            row[f"messages_{way}_mean"], row[f"messages_{way}_max"] = float(count.mean()), int(count.max())
            if message_bytes is not None:
                row[f"bytes_{way}_mean"] = float(count.mean()) * message_bytes
                row[f"bytes_{way}_max"] = int(count.max()) * message_bytes
    rename = {"node_loss": "train_loss_node", "mean_model_loss": "mean_model_train_loss"}
    for k, v in metrics.items():
        if k == "step" or k.startswith("messages_"):
            continue
        k = rename.get(k, k)
        v = np.asarray(v)
        if v.ndim == 0:
            row[k] = float(v)
        else:
            row[k] = v.tolist()
    return row


def line_name(algorithm: str, run: str) -> str:
    """The name of one line of a run's figures and tables: the algorithm, with a sweep's point
    (``ecl-pdmm (eta=0.5)``) or another run label (``ecl-pdmm (run 2)``) when it has one."""
    if not run:
        return algorithm
    return f"{algorithm} ({run})" if "=" in run else f"{algorithm} (run {run})"


def lines(histories: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Histories split into lines (:func:`line_name`): an algorithm's rows of a sweep, one
    history per grid point (each with its seeds' rows); other histories as they are."""
    out: dict[str, list[dict]] = {}
    for name, hist in histories.items():
        for row in hist:
            out.setdefault(line_name(name, row.get("run", "")), []).append(row)
    return out


def last_points(history: list[dict]) -> dict | list[dict]:
    """The last metric point of a history: its last row, or with seeds (rows with a
    ``seed``) the list of every seed's row at the last step."""
    last = history[-1]
    if "seed" not in last:
        return last
    return [r for r in history if r["step"] == last["step"] and r["algorithm"] == last["algorithm"]]


def _summary(row: dict) -> dict:
    return {
        "step": row["step"],
        "epoch": row["epoch"],
        "test_acc_mean": float(np.mean(row["test_acc_node"])),
        "test_acc_min": float(np.min(row["test_acc_node"])),
        "test_loss_mean": float(np.mean(row["test_loss_node"])),
        "mean_model_test_acc": row["mean_model_test_acc"],
        "consensus_distance": row["consensus_distance"],
        "wall_time": row["wall_time"],
    }


SEED_SPREAD = ("test_acc_mean", "test_acc_min", "test_loss_mean", "mean_model_test_acc", "consensus_distance")
"""The summary values that a batch of seeds reports as mean and ``<value>_std`` over seeds."""


def summarize(final: dict[str, dict | list[dict]]) -> dict[str, dict]:
    """Final mean test accuracy/loss per algorithm (from each algorithm's last history row).

    With seeds (a list of last rows, :func:`last_points`): every value is the mean over the
    seeds, each of :data:`SEED_SPREAD` also has ``<value>_std`` (the sample standard
    deviation over seeds, ddof = 1), and ``seeds`` lists them."""
    out = {}
    for name, rows in final.items():
        if isinstance(rows, dict):
            out[name] = _summary(rows)
            continue
        per = [_summary(r) for r in rows]
        s = {k: per[0][k] if k == "step" else float(np.mean([p[k] for p in per])) for k in per[0]}
        for k in SEED_SPREAD:
            s[f"{k}_std"] = float(np.std([p[k] for p in per], ddof=1)) if len(per) > 1 else 0.0
        s["seeds"] = [int(r["seed"]) for r in rows]
        out[name] = s
    return out


def write_metrics_csv(path: pathlib.Path, histories: dict[str, list[dict]], n_nodes: int) -> None:
    """Flatten per-node lists into columns (``test_acc_node_3``) and write one CSV."""
    rows = []
    for hist in histories.values():
        for r in hist:
            flat = {}
            for k, v in r.items():
                if isinstance(v, list):
                    flat[f"{k.replace('_node', '')}_mean"] = float(np.mean(v))
                    for i, x in enumerate(v):
                        flat[f"{k}_{i}"] = x
                else:
                    flat[k] = v
            rows.append(flat)
    if not rows:
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    run_folder.atomic_write_text(path, buf.getvalue())


def write_final(path: pathlib.Path, final: dict[str, dict]) -> None:
    """``final.json``: :func:`summarize` of each algorithm's last history row."""
    run_folder.atomic_write_text(path, json.dumps(summarize(final), indent=2) + "\n")


def write_config(path: pathlib.Path, resolved: dict) -> None:
    """``config.json``: the resolved config (a JSON-friendly dict)."""
    run_folder.atomic_write_text(path, json.dumps(resolved, indent=2) + "\n")


def write_split(run_dir: pathlib.Path, header: str, split_text: str, counts, num_classes: int,
                seeds: list[int] | None = None) -> None:
    """``split.txt`` (``header``, a blank line, the table ``split_text``) and ``split.csv``
    (samples per node and class, one row per node, columns ``class_0`` ...): ``counts`` is
    one [N, C] table; with ``seeds`` (each seed its own split) a list of one per seed, and
    split.csv has a first column ``seed``."""
    run_folder.atomic_write_text(run_dir / "split.txt", f"{header}\n\n{split_text}\n")
    buf = io.StringIO()
    names = [f"class_{c}" for c in range(num_classes)]
    if seeds is None:
        table = np.asarray(counts)
    else:
        table = np.concatenate([np.column_stack([np.full(len(c), s), c]) for s, c in zip(seeds, counts)])
        names = ["seed"] + names
    np.savetxt(buf, table, fmt="%d", delimiter=",", header=",".join(names))
    run_folder.atomic_write_text(run_dir / "split.csv", buf.getvalue())
