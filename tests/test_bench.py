"""The benchmark package (experiments/bench/) runs its workers and builds its report.

Speed itself is never asserted here (house rule: ratios go in benchmarks, not in timed
tests); these check that the measurements exist, are sane and reach the tables.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ecl_jax import cli

# slow: one subprocess or set of runs for the module; grouped: that fixture is built once, on one worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench")]

REPO = Path(__file__).resolve().parents[1]
TAG = "BENCH_RESULT "


def _worker(cfg: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.bench", "--worker", json.dumps(cfg)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(TAG)]
    assert proc.returncode == 0 and lines, f"worker failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len(TAG):])


@pytest.fixture(scope="module")
def tiny_rows():
    base = dict(model="logistic", algorithm="ecl-pdmm", topology="ring", n=8, steps=2, repeats=1)
    return [
        _worker(dict(base, kind="engine")),
        _worker(dict(base, kind="loop", variant="loop-node")),
        _worker(dict(kind="bigbatch", model="logistic", n=8, steps=2, repeats=1)),
    ]


def test_workers_measure_throughput_and_exact_state_size(tiny_rows):
    engine, loop, big = tiny_rows
    for row in tiny_rows:
        assert row["status"] == "ok" and row["node_steps_per_s"] > 0 and row["peak_rss_mb"] > 0
    # ECL-PDMM state on an 8-ring: N P + 2E P floats exactly (P = 7,850)
    assert engine["ideal_state_mb"] == pytest.approx((8 * 7850 + 2 * 8 * 7850) * 4 / 2**20)
    assert engine["state_mb"] == pytest.approx(engine["ideal_state_mb"], rel=1e-3)
    assert loop["variant"] == "loop-node" and big["kind"] == "bigbatch"


def test_report_through_the_cli(tiny_rows, tmp_path, capsys):
    jsonl = tmp_path / "results.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in tiny_rows))
    assert cli.main(["bench", "--report", str(jsonl), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| logistic | ecl-pdmm | ring | 8 |" in md  # the engine row with its ratios
    targets = json.loads((tmp_path / "out" / "targets.json").read_text())
    assert targets["state_over_ideal_max"] == pytest.approx(1.0, rel=1e-3)
    assert (tmp_path / "out" / "results.csv").read_text().count("\n") == 4  # header + 3 rows


def test_cpu_profile_runs_and_its_directed_dual_step_computes_the_library_step():
    from experiments import profile_cpu

    up = profile_cpu.profile_update(4, 2)
    assert up["directed_max_abs_err"] < 1e-5  # per-directed-edge storage computes the same step
    assert set(up["update_ms"]) == {"library", "no boundary", "directed duals"}
    assert all(v > 0 for v in up["update_ms"].values()) and up["stream_gbs"] > 0
    with pytest.raises(SystemExit):
        profile_cpu.main(["--n", "2"])  # a ring needs 3 nodes: argparse error, exit 2


def test_ctrl_c_in_the_bench_is_one_line_like_run(monkeypatch, capsys):
    from experiments.bench import runner

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "main", interrupted)  # experiments/bench/__main__.py answers it
    assert cli.main(["bench", "--quick"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted: the benchmark's finished rows are in its --out folder (results.jsonl)"]
