"""Constants and helpers shared by the workloads, the runner and the report."""

from __future__ import annotations

import os

BATCH = 32  # samples per node and step
INPUT_SHAPE = (28, 28, 1)
# Algorithms' hyperparameters (timing does not depend on them; kept stable).
LR = 0.05
ETA = 1.0


def data_rows(n: int) -> int:
    """Samples held per node: 2 batches (sampling with replacement), 1 batch when huge."""
    return 2 * BATCH if n <= 1024 else BATCH


def load_avg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def describe(cfg: dict) -> str:
    """One configuration in a few words (progress lines, the "not run" list)."""
    keys = ("kind", "variant", "model", "algorithm", "topology", "layout", "n", "devices", "precision")
    return " ".join(f"{cfg[k]}" for k in keys if k in cfg)
