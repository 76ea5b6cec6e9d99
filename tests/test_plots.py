"""What the figures show: published lines only for their setting, notes for what is not drawn.

The figures are captured before they are written (``plotting._save``) and read back as
matplotlib objects: legend entries, dashed reference lines, the note under the axes.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

from ecl_jax import cli, plotting
from ecl_jax.config import RunConfig, load_config, published_for

ROOT = pathlib.Path(__file__).resolve().parents[1]
KDD_MNIST = ROOT / "experiments" / "kdd2020" / "mnist_round_robin.py"


@pytest.fixture()
def figures(monkeypatch):
    """{file name: (legend labels, published line levels, note texts)} of every figure drawn."""
    seen = {}

    def capture(fig, path):
        ax = fig.axes[0]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        dashed = [float(line.get_ydata()[0]) for line in ax.get_lines() if line.get_label().endswith("(published)")]
        seen[pathlib.Path(path).name] = (legend, dashed, [t.get_text() for t in fig.texts])

    monkeypatch.setattr(plotting, "_save", capture)
    return seen


def _history(algo: str, consensus: float, acc: float = 0.5) -> list[dict]:
    return [{"algorithm": algo, "step": s, "epoch": s / 10, "test_acc_node": np.array([acc, acc + 0.1]),
             "test_loss_node": np.array([1.0, 1.2]), "consensus_distance": consensus * s} for s in (10, 20)]


def test_a_zero_series_on_a_log_axis_is_named_not_listed(figures, tmp_path):
    hist = {"ecl-pdmm": _history("ecl-pdmm", 0.3), "centralized": _history("centralized", 0.0)}
    plotting.plot_run(tmp_path, hist)
    legend, _, notes = figures["consensus.png"]
    assert legend == ["ecl-pdmm"]
    assert len(notes) == 1 and "centralized" in notes[0] and "log axis" in notes[0]
    legend, _, notes = figures["accuracy.png"]  # a linear axis draws it
    assert legend == ["ecl-pdmm", "centralized"] and notes == []


def test_published_lines_only_for_the_algorithms_drawn(figures, tmp_path):
    published = {"test_loss": {"ecl-pdmm": 0.035, "pairwise-gossip": 0.045}}
    plotting.plot_run(tmp_path, {"ecl-pdmm": _history("ecl-pdmm", 0.3)}, published=published,
                      published_note="no published line for pairwise-gossip")
    legend, dashed, notes = figures["loss.png"]
    assert legend == ["ecl-pdmm", "ecl-pdmm (published)"] and dashed == [0.035]
    assert notes == ["no published line for pairwise-gossip"]


def test_published_values_are_kept_only_for_their_setting():
    written = load_config(str(KDD_MNIST))
    assert written.published["test_loss"]["ecl-pdmm"] == 0.035
    same = dataclasses.replace(written, name="x", steps=600, eval_every=300, algorithms=("ecl-pdmm",))
    assert published_for(written, same) == same  # where, how long, how often, which: the same setting
    mlp = published_for(written, dataclasses.replace(written, dataset="mnist5k", model="mlp"))
    assert mlp.published == {}
    assert "dataset=mnist5k" in mlp.published_note and "model=mlp" in mlp.published_note
    tuned_opts = dict(written.options, **{"ecl-pdmm": dict(written.options["ecl-pdmm"], eta=2.0)})
    tuned = published_for(written, dataclasses.replace(written, options=tuned_opts))
    assert "ecl-pdmm" not in tuned.published["test_loss"] and tuned.published["test_loss"]["ecl-admm"] == 0.04
    assert tuned.published_note == "no published line for ecl-pdmm: this run changes its options"
    own = dataclasses.replace(written, model="mlp", published={"test_loss": {"ecl-pdmm": 0.1}})
    assert published_for(written, own) == own  # a published table given with the run is the user's to keep
    assert published_for(RunConfig(), dataclasses.replace(RunConfig(), lr=0.1)).published_note == ""


def test_the_embedded_subset_command_draws_no_published_line(figures, tmp_path, monkeypatch):
    """The MNIST-subset MLP of the KDD20 file (its documented command, shortened): no CNN lines."""
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", str(KDD_MNIST), "--quiet", "--set", "dataset=mnist5k", "--set", "model=mlp",
                     "--set", "n_train=300", "--set", "n_test=100", "--set", "steps=4", "--set", "eval_every=2",
                     "--set", "algorithms=ecl-pdmm,centralized"])
    assert code == 0
    legend, dashed, notes = figures["loss.png"]
    assert dashed == [] and not any("published" in x for x in legend)
    assert len(notes) == 1 and notes[0].startswith("no published line") and "model=mlp" in notes[0]
    cfg = (tmp_path / "runs").glob("*/config.json")
    assert any('"published": {}' in p.read_text() for p in cfg)
