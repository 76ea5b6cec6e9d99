"""The worst cases of careless or hostile use, through the ``ecl-jax`` command line.

Each command goes through ``ecl_jax.cli.main``, the function ``python -m ecl_jax`` and the
``ecl-jax`` script call, in this process (exit code, stdout and stderr captured, the
working folder and environment set as for a subprocess): a fresh interpreter per command
cost 2-4 s of imports and a cold compile each. The commands whose point is the process
itself (the traceback under ``--debug``, a user's own bug in a config file, a missing
file) run as real ``python -m ecl_jax`` subprocesses.

Each test works in a temporary folder holding other people's files (notes, another
tool's folder, a finished run) and asserts that nothing outside the run folder it asked
for changed, that expected errors are one line (exit 2, no traceback), and that what must
still work (resume, --fresh of our own folder, extension) does.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest


from cli_harness import TINY, _cli, _one_line_error, _snapshot


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "name=..", "--fresh"], "'..'"),
        (["--set", "name=", "--fresh"], "empty"),
        (["--set", "name=.", "--fresh"], "'.'"),
        (["--set", "name=../data", "--fresh"], "single folder name"),
        (["--set", "name=/tmp", "--fresh"], "single folder name"),
        (["--set", "out_dir=.", "--set", "name=data", "--fresh"], "not made by ecl_jax"),
        (["--set", "name=not_ours", "--fresh"], "not made by ecl_jax"),
        (["--set", "name=not_ours"], "not made by ecl_jax"),
    ],
)
def test_fresh_never_deletes_what_ecl_jax_did_not_make(home, args, needle):
    before = _snapshot(home)
    res = _cli(home, "run", "tiny.py", "--quiet", *args)
    _one_line_error(res, needle)
    assert _snapshot(home) == before


@pytest.mark.slow
def test_fresh_validates_before_it_deletes_and_only_touches_its_run(home):
    res = _cli(home, "run", "tiny.py", "--quiet")
    assert res.returncode == 0, res.stderr
    run = home / "runs" / "tiny"
    assert (run / "metrics.csv").is_file() and (run / ".ecl_jax_run").is_file()
    before = _snapshot(home)
    # a typo in the new config: refused before anything is deleted
    res = _cli(home, "run", "tiny.py", "--quiet", "--fresh", "--set", "name=tiny", "--set", "topology=tours")
    _one_line_error(res, "unknown topology 'tours'", "ring")
    # a data set that is not there: also refused first
    res = _cli(home, "run", "tiny.py", "--quiet", "--fresh", "--set", "name=tiny", "--set", "dataset=mnist",
               env={"ECL_JAX_DATA_DIR": str(home / "data")})
    _one_line_error(res, "mnist")
    assert _snapshot(home) == before
    # a valid --fresh re-runs our own folder and nothing else
    res = _cli(home, "run", "tiny.py", "--quiet", "--fresh")
    assert res.returncode == 0, res.stderr
    assert (run / "metrics.csv").is_file()
    outside = {k: v for k, v in before.items() if not (k == "runs/tiny" or k.startswith("runs/tiny/"))}
    assert _snapshot(home, skip=run) == outside


def test_expected_errors_are_one_line_without_traceback(home):
    (home / "no_config.py").write_text("X = 1\n")
    (home / "broken.py").write_text("raise RuntimeError('my bug')\n")
    bad_idx = home / "bad_idx"
    bad_idx.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (bad_idx / name).write_bytes(b"\x00\x00\x08\x03garbage")
    before = _snapshot(home)
    cases = [
        (["run", "no_config.py"], "must define CONFIG"),
        (["run", "broken.py"], "my bug"),
        (["run", "missing.py"], "does not exist"),
        (["run", "tiny.py", "--set", "n_nodes=7", "--set", "topology=torus"], "prime"),
        (["run", "tiny.py", "--set", "topology=random_regular", "--set", "degree=3", "--set", "n_nodes=5"], "random_regular"),
        (["run", "tiny.py", "--set", "dataset=mnist", "--set", f"data_dir={bad_idx}"], "bad_idx"),
        (["run", "tiny.py", "--set", "out_dir=notes.txt"], "notes.txt"),
        (["run", "tiny.py", "--set", "ecl_pdmm.eta=50"], "did you mean 'ecl-pdmm'"),
        (["run", "tiny.py", "--set", "gossip.lr=-1"], "gossip.lr"),
        (["run", "tiny.py", "--set", "gossip.momentum=-1"], "momentum"),
        (["run", "tiny.py", "--set", "lr=0"], "lr must be"),
        (["run", "tiny.py", "--algorithms", ""], "--algorithms is empty"),
        (["run", "tiny.py", "--algorithms", "gossip,gossip"], "more than once"),
        (["run", "tiny.py", "--set", "steps=0"], "steps"),
        (["run", "tiny.py", "--set", "n_train=0"], "n_train"),
        (["run", "tiny.py", "--set", "partition=iid"], "partition_k=3 has no effect"),
        (["run", "tiny.py", "--set", "published={\"test_acc\": {\"gossip\": 65}}"], "published"),
        (["run", "tiny.py", "--set", "edge_schedule=slots:K=x"], "edge_schedule"),
    ]
    real = {"broken.py", "missing.py"}  # a user's own exception, a missing file: also as real processes
    for args, needle in cases:
        _one_line_error(_cli(home, *args), needle)
        if real & set(args):
            _one_line_error(_cli(home, *args, real=True), needle)
    assert _snapshot(home) == before  # none of them wrote anything
    assert not (home / "runs" / "tiny").exists()


@pytest.mark.parametrize("args, usage, guess", [
    (["run", "tiny.py", "--step", "100"], "usage: ecl-jax run", "did you mean --set steps=100?"),
    (["run", "tiny.py", "--n-nodes=4"], "usage: ecl-jax run", "did you mean --set n_nodes=4?"),
    (["run", "tiny.py", "--qiuet"], "usage: ecl-jax run", "did you mean '--quiet'?"),
    (["compare", "runs/a", "--ot", "x"], "usage: ecl-jax compare", "did you mean '--out'?"),
])
def test_unknown_flags_get_the_subcommands_usage_and_a_guess(home, args, usage, guess):
    before = _snapshot(home)
    res = _cli(home, *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith(usage), res.stderr  # not the top-level "usage: ecl-jax [-h] {run,...}"
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{usage.split()[1]} {args[0]}: error: unrecognized arguments") and guess in last, last
    assert _snapshot(home) == before


@pytest.mark.parametrize("command, why", [("run", "resume from the last checkpoint"),
                                          ("compare", "no run folder was changed")])
def test_ctrl_c_is_one_line_for_every_command(home, monkeypatch, command, why):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    from ecl_jax import plotting, runner

    monkeypatch.setattr(runner, "run_experiment", interrupted)
    monkeypatch.setattr(plotting, "compare_runs", interrupted)
    res = _cli(home, *(["run", "tiny.py"] if command == "run" else ["compare", "runs/not_ours"]))
    assert res.returncode == 130
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and why in lines[0], res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("when", ["at_start", "in_the_run"])
def test_a_real_ctrl_c_is_one_line_at_any_time(home, when):
    """SIGINT to a real ``python -m ecl_jax run`` while it imports JAX / re-executes with
    tcmalloc (0.3 s), or once it trains: exit 130, one line, no traceback (resuming after
    it: test_runner.py::test_interrupted_run_resumes_bit_identical)."""
    import signal
    import time

    args = [sys.executable, "-m", "ecl_jax", "run", "tiny.py", "--set", "steps=100000", "--set", "eval_every=50",
            "--set", "name=sig"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(args, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if when == "at_start":
        time.sleep(0.3)
    else:
        while "] step " not in proc.stderr.readline():
            assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert [line for line in err.splitlines() if line.startswith("interrupted")] == \
        ["interrupted: rerun the same command to resume from the last checkpoint"], err
    assert err.rstrip().endswith("resume from the last checkpoint"), err


def test_smoke_runs_the_experiment_file_once(home):
    """A side effect of an experiment file (here: a line appended to a file) happens once per command."""
    (home / "side.py").write_text(TINY + "with open('loads.txt', 'a') as f:\n    f.write('x')\n"
                                  "SMOKE = ['steps=4', 'eval_every=2']\n")
    for args in (["--smoke"], []):
        (home / "loads.txt").write_text("")
        res = _cli(home, "run", "side.py", "--quiet", *args)
        assert res.returncode == 0, res.stderr
        assert (home / "loads.txt").read_text() == "x", args
    (home / "bad_smoke.py").write_text(TINY + "SMOKE = 'steps=4'\n")
    _one_line_error(_cli(home, "run", "bad_smoke.py", "--smoke"), "SMOKE must be a list of 'key=value'")


def test_debug_shows_the_traceback(home):
    res = _cli(home, "run", "tiny.py", "--set", "topology=tours", "--debug", real=True)
    assert res.returncode != 0 and "Traceback" in res.stderr and "tours" in res.stderr


def test_corrupted_config_and_checkpoint_name_the_file(home):
    assert _cli(home, "run", "tiny.py", "--quiet").returncode == 0
    run = home / "runs" / "tiny"
    cfg = run / "config.json"
    good = cfg.read_bytes()
    cfg.write_bytes(b"")  # a full disk at start used to leave this
    res = _cli(home, "run", "tiny.py", "--quiet")
    _one_line_error(res, str(pathlib.Path("runs/tiny/config.json")), "--fresh")
    cfg.write_bytes(good)
    ck = run / "checkpoints" / "gossip.npz"
    ck.write_bytes(ck.read_bytes()[:200])
    res = _cli(home, "run", "tiny.py", "--quiet")
    _one_line_error(res, "gossip.npz", "corrupted", "delete that file")


def _fake_idx(d: pathlib.Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    for split, n in (("train", 200), ("t10k", 50)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        for kind, a in (("images", x), ("labels", y)):
            raw = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
            (d / f"{split}-{kind}-idx{a.ndim}-ubyte.gz").write_bytes(gzip.compress(raw))


@pytest.mark.slow
def test_resume_never_mixes_two_runs(home):
    tiny = ["run", "tiny.py", "--quiet", "--set", "name=mix", "--set", "steps=40"]
    # 1. config.json deleted and lr changed: the checkpoint's fingerprint refuses it
    run = home / "runs" / "mix"
    assert _cli(home, *tiny).returncode == 0
    (run / "config.json").unlink()
    res = _cli(home, *tiny, "--set", "lr=0.1")
    _one_line_error(res, "gossip.npz", "belongs to a different run", "lr")
    # 2. a checkpoint renamed to another algorithm's file
    (run / "checkpoints" / "gossip.npz").rename(run / "checkpoints" / "dsgd.npz")
    res = _cli(home, *tiny, "--algorithms", "dsgd")
    _one_line_error(res, "dsgd.npz", "algorithm")
    # 3. the data under the same name changes between the halves of a run
    _fake_idx(home / "data_a", 0)
    _fake_idx(home / "data_b", 1)
    cmd = ["run", "tiny.py", "--quiet", "--set", "name=data", "--set", "dataset=fashion_mnist",
           "--set", "n_train=None", "--set", "n_test=None", "--set", "steps=20"]
    assert _cli(home, *cmd, env={"ECL_JAX_DATA_DIR": str(home / "data_a")}).returncode == 0
    res = _cli(home, *cmd, "--set", "steps=40", env={"ECL_JAX_DATA_DIR": str(home / "data_b")})
    _one_line_error(res, "belongs to a different run", "data.")


def test_resume_refuses_a_changed_test_set_and_accepts_an_older_checkpoint_without_one(home):
    """Only the test labels file is replaced between the halves of a run: refused, naming the
    test set (a resumed curve would mix two test sets); a checkpoint written before the test set
    was recorded (no data.test in its fingerprint) still resumes."""
    from ecl_jax import checkpoint

    _fake_idx(home / "data_a", 0)
    cmd = ["run", "tiny.py", "--quiet", "--set", "name=tests", "--set", "dataset=fashion_mnist",
           "--set", "n_train=None", "--set", "n_test=None", "--set", "steps=20"]
    env = {"ECL_JAX_DATA_DIR": str(home / "data_a")}
    assert _cli(home, *cmd, env=env).returncode == 0
    labels = home / "data_a" / "t10k-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    y = np.roll(np.arange(50, dtype=np.uint8) % 10, 1)
    raw = struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 50) + y.tobytes()
    labels.write_bytes(gzip.compress(raw))
    from ecl_jax import datasets

    datasets._load_idx_cached.cache_clear()
    res = _cli(home, *cmd, "--set", "steps=40", env=env)
    _one_line_error(res, "belongs to a different run", "data.test", "the test set")
    labels.write_bytes(good)
    datasets._load_idx_cached.cache_clear()
    # an older checkpoint: the same file without data.test in its fingerprint
    ck = home / "runs" / "tests" / "checkpoints" / "gossip.npz"
    meta = checkpoint.read_meta(ck)
    assert "test" in meta["fingerprint"]["data"]
    with np.load(ck, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    fp = json.loads(str(arrays["fingerprint"]))
    del fp["data"]["test"]
    arrays["fingerprint"] = np.asarray(json.dumps(fp))
    del arrays["checksum"]  # written before checksums too (one came later than data.test)
    np.savez(ck, **arrays)
    res = _cli(home, *cmd, "--set", "steps=40", env=env)
    assert res.returncode == 0, res.stderr


def test_second_process_on_a_run_folder_is_refused_and_a_stale_lock_is_taken_over(home):
    assert _cli(home, "run", "tiny.py", "--quiet").returncode == 0
    lock = home / "runs" / "tiny" / ".lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        lock.write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        res = _cli(home, "run", "tiny.py", "--quiet", "--set", "steps=30")
        _one_line_error(res, "in use by process", str(sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder is gone (killed): its lock is taken over and the run extends to 30 steps
    res = _cli(home, "run", "tiny.py", "--quiet", "--set", "steps=30")
    assert res.returncode == 0, res.stderr
    assert not lock.exists()
    final = json.loads((home / "runs" / "tiny" / "final.json").read_text())
    assert final["gossip"]["step"] == 30


def test_run_config_json_is_a_config(home):
    assert _cli(home, "run", "tiny.py", "--quiet").returncode == 0
    before = _snapshot(home)
    res = _cli(home, "run", "runs/tiny/config.json", "--quiet")  # the same run: resumes, finished, rewrites nothing new
    assert res.returncode == 0, res.stderr
    assert "final test accuracy" in res.stdout
    after = _snapshot(home)
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert all(k.startswith("runs/tiny/") for k in changed), changed


@pytest.mark.parametrize("runtime, needle", [
    ("free:pause_every=10000000000,pause=1", "outside 0..2,147,483,647 (the compiled step counts steps in int32)"),
    ("free:speed=1e-300", "speed=1e-300 is 0 in float32"),
    ("free:pause=1e39", "pause=1e39 is beyond float32"),
    ("free:jitter=0.1,jitter=0.9", "jitter is given twice"),
    ("free:pause_every=1e3", "pause_every must be a whole number, got '1e3'"),
    ("free:stragglers=0,straggler_speed=0.5", "straggler_speed=0.5 with stragglers=0 slows no node"),
    ("free:stragglers=2", "stragglers=2 needs straggler_speed=SPEED"),
])
def test_runtime_values_the_compiled_step_cannot_hold_are_refused_first(home, runtime, needle):
    """Values that passed validation and then broke (or silently froze nodes) inside the compiled
    step: refused before any folder is made, saying what is wrong; no numpy warning leaks."""
    before = _snapshot(home)
    res = _cli(home, "run", "tiny.py", "--set", f"runtime={runtime}")
    _one_line_error(res, needle)
    assert "RuntimeWarning" not in res.stderr and "overflow" not in res.stderr
    assert _snapshot(home) == before
