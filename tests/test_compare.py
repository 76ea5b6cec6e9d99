"""``ecl-jax compare`` and ``experiments/reproduce.py``: runs kept apart, strict inputs, safe output folder.

Fake run folders (hand-written config.json + metrics.csv) stand in for training runs.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import pathlib

import pytest

from ecl_jax import cli, plotting
from ecl_jax.errors import DataError, UserError
from ecl_jax.run_folder import MARKER

ROOT = pathlib.Path(__file__).resolve().parents[1]

HEADER = ("step,epoch,round,algorithm,samples_seen,wall_time,test_acc_mean,test_acc_node_0,test_acc_node_1,"
          "test_loss_mean,test_loss_node_0,test_loss_node_1,consensus_distance,mean_model_test_acc")


def _rows(algorithms, steps, acc0):
    lines = []
    for a_i, algo in enumerate(algorithms):
        for s_i, step in enumerate(steps):
            acc = acc0 + 0.1 * s_i + 0.01 * a_i
            lines.append(f"{step},{step / 10},{step / 8},{algo},{step * 20},{step * 0.1:.1f},{acc:.4f},"
                         f"{acc - 0.01:.4f},{acc + 0.01:.4f},{2 - acc:.4f},{2 - acc:.4f},{2 - acc:.4f},"
                         f"{0.1 / (s_i + 1):.4f},{acc:.4f}")
    return lines


def make_run(path: pathlib.Path, algorithms=("ecl-pdmm", "gossip"), steps=(10, 20, 30), acc0=0.3,
             marker=False, **config) -> pathlib.Path:
    path.mkdir(parents=True)
    cfg = {"name": path.name, "dataset": "mnist5k", "model": "mlp", "topology": "ring", "n_nodes": 2,
           "x_axis": "step", "K": 8, **config}
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "metrics.csv").write_text("\n".join([HEADER] + _rows(algorithms, steps, acc0)) + "\n")
    if marker:
        (path / MARKER).write_text('{"made_by": "ecl_jax"}\n')
    return path


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


def compare(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def read_compare_csv(out: pathlib.Path) -> list[dict]:
    with open(out / "compare.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ runs kept apart


@pytest.mark.slow
def test_two_runs_sharing_a_folder_name_are_both_compared(tmp_path, capsys):
    a = make_run(tmp_path / "runs" / "a" / "default", acc0=0.3)
    b = make_run(tmp_path / "runs" / "b" / "default", acc0=0.5, marker=True)
    out = tmp_path / "cmp"
    code, stdout, err = compare(capsys, a, b, "--out", out)
    assert code == 0, err
    rows = read_compare_csv(out)
    assert sorted((r["run_folder"], r["algorithm"]) for r in rows) == [
        ("a/default", "ecl-pdmm"), ("a/default", "gossip"), ("b/default", "ecl-pdmm"), ("b/default", "gossip")]
    # each run's own final numbers, not one run overwriting the other
    final = {(r["run_folder"], r["algorithm"]): float(r["test_acc_mean"]) for r in rows}
    assert final[("a/default", "ecl-pdmm")] == pytest.approx(0.5)
    assert final[("b/default", "ecl-pdmm")] == pytest.approx(0.7)
    info = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in info["runs"]] == ["a/default", "b/default"]
    assert "a/default" in info["title"] and "b/default" in info["title"] and "mnist5k" in info["title"]
    assert "ring" in info["title"] and "comparison" not in info["title"]
    for name in ("accuracy.png", "loss.png", "consensus.png", "compare.md"):
        assert (out / name).stat().st_size > 0
    assert "| a/default | ecl-pdmm |" in (out / "compare.md").read_text()
    assert "| b/default | gossip |" in stdout


def test_labels_are_the_shortest_distinguishing_suffix(tmp_path):
    assert plotting.run_labels([tmp_path / "runs/a/default", tmp_path / "runs/b/default"]) == ["a/default",
                                                                                             "b/default"]
    assert plotting.run_labels([tmp_path / "runs/lr0.1", tmp_path / "other/lr0.2"]) == ["lr0.1", "lr0.2"]
    assert plotting.run_labels([tmp_path / "x/a/default", tmp_path / "y/a/default", tmp_path / "z"]) == [
        "x/a/default", "y/a/default", "z"]


def test_styles_differ_between_runs_and_legend_names_run_and_algorithm(tmp_path, capsys, monkeypatch):
    a = make_run(tmp_path / "a" / "default")
    b = make_run(tmp_path / "b" / "default")
    drawn = {}
    save = plotting._save

    def spy(fig, path):  # what the saved figure shows: legend texts and line styles
        ax = fig.axes[0]
        drawn[path.name] = {
            "legend": [t.get_text() for t in ax.get_legend().get_texts()],
            "title": ax.get_title(),
            "lines": {ln.get_label(): (ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in ax.get_lines()},
        }
        save(fig, path)

    monkeypatch.setattr(plotting, "_save", spy)
    code, _, err = compare(capsys, a, b, "--out", tmp_path / "cmp")
    assert code == 0, err
    acc = drawn["accuracy.png"]
    assert acc["legend"] == ["a/default: ecl-pdmm", "a/default: gossip", "b/default: ecl-pdmm", "b/default: gossip"]
    assert "a/default" in acc["title"] and "b/default" in acc["title"]
    lines = acc["lines"]
    for algo in ("ecl-pdmm", "gossip"):
        mine, theirs = lines[f"a/default: {algo}"], lines[f"b/default: {algo}"]
        assert mine[0] == theirs[0]  # one colour per algorithm
        assert mine[1:] != theirs[1:]  # line style / marker per run
    assert lines["a/default: ecl-pdmm"][0] != lines["a/default: gossip"][0]
    assert len(set(lines.values())) == 4
    series = json.loads((tmp_path / "cmp" / "compare.json").read_text())["series"]
    assert len({(s["color"], str(s["linestyle"]), s["marker"]) for s in series}) == 4


def test_same_folder_given_twice_is_compared_once(tmp_path, capsys):
    a = make_run(tmp_path / "runs" / "default")
    code, _, err = compare(capsys, a, tmp_path / "runs" / ".." / "runs" / "default", "--out", tmp_path / "cmp")
    assert code == 0 and "compared once" in err
    assert len(read_compare_csv(tmp_path / "cmp")) == 2


# ------------------------------------------------------------------ strict inputs


PARTIAL = {
    "empty": ("", "is empty"),
    "header only": (HEADER + "\n", "header but no rows"),
    "missing column": ("step,epoch,test_acc_mean\n10,1.0,0.5\n", "lacks the column(s) algorithm"),
    "no accuracy": ("step,epoch,algorithm\n10,1.0,gossip\n", "test_acc_node_<i> or test_acc_mean"),
    "truncated last line": ("\n".join([HEADER] + _rows(["gossip"], (10, 20), 0.3))[:-9], "truncated"),
    "short line": ("\n".join([HEADER] + _rows(["gossip"], (10, 20), 0.3) + ["30,3.0,3.75,gossip,600"]) + "\n",
                   "line 4: 5 values for 14 columns"),
    "not a number": ("\n".join([HEADER] + _rows(["gossip"], (10,), 0.3)).replace(",0.3000,", ",0.3x,", 1) + "\n",
                     "column 'test_acc_mean': '0.3x' is not a number"),
}


@pytest.mark.parametrize("case", sorted(PARTIAL))
def test_empty_or_partial_metrics_csv_is_refused_naming_the_file(tmp_path, capsys, case):
    good = make_run(tmp_path / "good")
    bad = make_run(tmp_path / "bad")
    text, reason = PARTIAL[case]
    (bad / "metrics.csv").write_text(text)
    code, _, err = compare(capsys, good, bad, "--out", tmp_path / "cmp")
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert str(bad / "metrics.csv") in err and reason in err
    assert not (tmp_path / "cmp").exists()  # every input is checked before anything is written
    with pytest.raises(DataError):
        plotting.read_metrics_csv(bad / "metrics.csv")


def test_read_metrics_tolerates_extra_columns_and_splits_runs(tmp_path):
    lines = [HEADER + ",run,note"]
    for run in ("0", "1"):
        lines += [row + f",{run},seed {run}" for row in _rows(["ecl-pdmm"], (10, 20), 0.3 + 0.2 * int(run))]
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    hist = plotting.read_metrics_csv(tmp_path / "metrics.csv")
    assert list(hist) == ["ecl-pdmm (run 0)", "ecl-pdmm (run 1)"]
    assert hist["ecl-pdmm (run 1)"][-1]["test_acc_node"] == pytest.approx([0.59, 0.61])
    assert hist["ecl-pdmm (run 1)"][-1]["note"] == "seed 1" and hist["ecl-pdmm (run 0)"][0]["step"] == 10


def test_folder_without_metrics_says_why(tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "config.json").write_text("{}")
    (unfinished / "checkpoints" / "gossip.npz").write_bytes(b"x")
    code, _, err = compare(capsys, unfinished, "--out", tmp_path / "cmp")
    assert code == 2 and f"{unfinished} has no metrics.csv" in err and "not finished" in err
    finals = tmp_path / "finals"
    finals.mkdir()
    (finals / "config.json").write_text("{}")
    (finals / "final.json").write_text("{}")
    code, _, err = compare(capsys, finals, "--out", tmp_path / "cmp")
    assert code == 2 and "final values only" in err and str(finals / "config.json") in err


# ------------------------------------------------------------------ nothing to compare


def test_nothing_to_compare_exits_2(tmp_path, capsys):
    code, _, err = compare(capsys, "--out", tmp_path / "cmp")
    assert code == 2 and "nothing to compare" in err
    code, _, err = compare(capsys, tmp_path / "missing", "--out", tmp_path / "cmp")
    assert code == 2 and f"{tmp_path / 'missing'}: no such folder" in err
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    code, _, err = compare(capsys, other, "--out", tmp_path / "cmp")
    assert code == 2 and "not a run folder" in err
    code, _, err = compare(capsys, other / "cat.jpg", "--out", tmp_path / "cmp")
    assert code == 2 and "is a file, not a run folder" in err
    assert not (tmp_path / "cmp").exists()


# ------------------------------------------------------------------ --out


@pytest.mark.parametrize("kind", ["compared run", "other run with marker", "checkpoints only", "inside a run"])
def test_out_that_is_a_run_folder_is_refused_and_left_unchanged(tmp_path, capsys, kind):
    a = make_run(tmp_path / "a" / "default")
    b = make_run(tmp_path / "b" / "default", marker=True)
    if kind == "compared run":
        out = b
    elif kind == "other run with marker":
        out = tmp_path / "c"
        out.mkdir()
        (out / MARKER).write_text("{}")
        (out / "notes.txt").write_text("mine")
    elif kind == "checkpoints only":
        out = tmp_path / "d"
        (out / "checkpoints").mkdir(parents=True)
    else:
        out = b / "cmp"
    before = {p: snapshot(p) for p in (tmp_path / "a", tmp_path / "b", out.parent)}
    code, _, err = compare(capsys, a, b, "--out", out)
    assert code == 2 and "--out" in err and "run folder" in err and "Traceback" not in err
    assert {p: snapshot(p) for p in before} == before


@pytest.mark.slow
def test_out_with_foreign_files_is_not_overwritten_but_own_output_is_refreshed(tmp_path, capsys):
    a = make_run(tmp_path / "a")
    foreign = tmp_path / "figures"
    foreign.mkdir()
    (foreign / "accuracy.png").write_bytes(b"someone else's figure")
    code, _, err = compare(capsys, a, "--out", foreign)
    assert code == 2 and "accuracy.png" in err
    assert (foreign / "accuracy.png").read_bytes() == b"someone else's figure"
    out = tmp_path / "cmp"
    assert compare(capsys, a, "--out", out)[0] == 0
    (a / "metrics.csv").write_text("\n".join([HEADER] + _rows(["dsgd"], (10, 20), 0.3)) + "\n")
    assert compare(capsys, a, "--out", out)[0] == 0  # its own folder: outputs are replaced
    assert [r["algorithm"] for r in read_compare_csv(out)] == ["dsgd"]
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_compare_error_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nothing to compare"):
        plotting.compare_runs([], tmp_path / "cmp")


# ------------------------------------------------------------------ stored reference results


def _reproduce():
    spec = importlib.util.spec_from_file_location("reproduce_under_test", ROOT / "experiments" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproduce_on_stored_results_prints_a_table(capsys):
    reproduce = _reproduce()
    results = ROOT / "experiments" / "kdd2020" / "results"
    assert reproduce.main(["--runs-dir", str(results), str(ROOT / "experiments/kdd2020/mnist_round_robin.py")]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| kdd20_mnist5k")]
    assert any(ln.startswith("| kdd20_mnist5k_cnn_round_robin | ecl-pdmm | 77.50 |") for ln in rows)
    assert any(ln.startswith("| kdd20_mnist5k_mlp_random | ecl-pdmm | 88.70 |") and "metrics.csv" in ln
               for ln in rows)
    assert len(rows) >= 12


def test_reproduce_names_results_without_metrics(capsys):
    reproduce = _reproduce()
    results = ROOT / "experiments" / "icml2021" / "results"
    files = [str(ROOT / "experiments/icml2021/fashion_logistic_random.py")]
    assert reproduce.main(["--runs-dir", str(results)] + files) == 0
    out = capsys.readouterr().out
    assert "| icml21_fashion_logistic_random | pdmm-isvr | 80.28 | 80.45 | -0.17 |" in out
    for d in sorted(results.iterdir()):
        if not (d / "metrics.csv").is_file():
            assert f"{d}: no metrics.csv" in out


@pytest.mark.slow
def test_stored_results_are_inputs_to_compare(tmp_path, capsys):
    stored = sorted(d for d in (ROOT / "experiments").glob("*/results/*") if (d / "metrics.csv").is_file())
    assert {"kdd20_mnist5k_cnn_round_robin", "kdd20_mnist5k_mlp_random", "kdd20_mnist5k_mlp_round_robin"} <= {
        d.name for d in stored}
    mine = make_run(tmp_path / "kdd20_mnist5k_mlp_random", algorithms=("ecl-pdmm",), steps=(300, 600))
    code, _, err = compare(capsys, *stored, mine, "--out", tmp_path / "cmp")
    assert code == 0, err
    rows = read_compare_csv(tmp_path / "cmp")
    folders = {r["run_folder"] for r in rows}
    assert "results/kdd20_mnist5k_mlp_random" in folders and str(pathlib.Path(tmp_path.name,
                                                                              "kdd20_mnist5k_mlp_random")) in folders
    for d in stored:
        assert (d / "config.json").is_file() and (d / "final.json").is_file()
        last = {r["algorithm"]: float(r["test_acc_mean"]) for r in rows if r["path"] == str(d)}
        final = json.loads((d / "final.json").read_text())
        assert last == pytest.approx({k: v["test_acc_mean"] for k, v in final.items()})  # metrics.csv = final.json


def test_reproduce_reports_a_partial_metrics_csv_and_falls_back_to_final_json(tmp_path, capsys):
    reproduce = _reproduce()
    run = make_run(tmp_path / "runs" / "mine", published={"test_acc": {"gossip": 0.5}})
    (run / "metrics.csv").write_text(HEADER + "\n")
    (run / "final.json").write_text(json.dumps({"gossip": {"step": 30, "test_acc_mean": 0.61, "test_loss_mean": 1.4,
                                                           "wall_time": 3.0}}))
    assert reproduce.main(["--runs-dir", str(tmp_path / "runs"), str(ROOT / "experiments/default.py")]) == 0
    out = capsys.readouterr().out
    assert "| mine | gossip | 61.00 | 50.00 | +11.00 |" in out and "| final.json |" in out
    assert f"{run}: unreadable metrics.csv" in out and "header but no rows" in out


def test_compare_never_shows_a_worst_node_it_does_not_have(tmp_path, capsys):
    """A metrics.csv with only mean columns: its worst node is blank with a footnote, not the mean;
    a run with per-node columns keeps its real worst node."""
    full = make_run(tmp_path / "runs" / "full", algorithms=("gossip",), acc0=0.5)
    mean_only = tmp_path / "runs" / "mean_only"
    mean_only.mkdir(parents=True)
    (mean_only / "config.json").write_text((full / "config.json").read_text().replace('"full"', '"mean_only"'))
    (mean_only / "metrics.csv").write_text("step,epoch,algorithm,test_acc_mean,test_loss_mean,consensus_distance\n"
                                           "10,1.0,gossip,0.5825,1.2,0.1\n")
    code, out, err = compare(capsys, full, mean_only, "--out", tmp_path / "cmp")
    assert code == 0, err
    rows = {r["run_folder"]: r for r in read_compare_csv(tmp_path / "cmp")}
    assert rows["mean_only"]["test_acc_mean"] == "0.5825" and rows["mean_only"]["test_acc_min"] == ""
    assert float(rows["full"]["test_acc_min"]) == pytest.approx(0.69)  # acc - 0.01 at the last step, node 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| mean_only |"))
    assert "| 58.25 |  |" in line and "58.25 | 58.25" not in line, line
    assert "A blank worst node: that run's metrics.csv has only the mean accuracy" in md
