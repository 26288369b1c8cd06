"""The `tessera4d` command in a real process: plugins, run (headless), keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from backend_process import HERE, REPO

from backend.job_store import JobFolder

pytestmark = pytest.mark.timeout(60)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]), COLUMNS="200")
    cmd = [sys.executable, "-m", "backend", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_plugins_lists_each_plugin_and_its_params() -> None:
    out = cli("plugins", "--plugins-from", "plugins_for_tests")
    assert out.returncode == 0, out.stderr
    assert "test.count" in out.stdout and "delay" in out.stdout and "input, runtime" in out.stdout


def test_run_writes_results_like_a_backend_job(tmp_path: Path) -> None:
    out = cli(
        "run",
        "test.count",
        "--out",
        str(tmp_path / "o"),
        "-p",
        "n=3",
        "-p",
        "vertices=4",
        "--plugins-from",
        "plugins_for_tests",
    )
    assert out.returncode == 0, out.stderr
    assert "done, 3 result(s)" in out.stdout
    folder = JobFolder(tmp_path / "o")
    record = json.loads((tmp_path / "o" / "job.json").read_text())
    assert record["state"] == "done" and record["results"] == 3 and record["params"]["n"] == 3
    assert folder.read_result(2)[1] == {"start": 2}


def test_run_input_fills_the_single_path_param(tmp_path: Path) -> None:
    positions = np.random.default_rng(1).random((2, 5, 3)).astype(np.float32)
    np.save(tmp_path / "p.npy", positions)
    out = cli(
        "run",
        "test.load_npy",
        "-i",
        str(tmp_path / "p.npy"),
        "-p",
        "scale=2",
        "--out",
        str(tmp_path / "o"),
        "--plugins-from",
        "plugins_for_tests",
    )
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(JobFolder(tmp_path / "o").read_result(0)[2]["positions"], positions * 2)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["test.fail", "-p", "mode=input"], "bad_input"),
        (["test.count", "-p", "n=-1"], "smallest allowed"),
        (["test.count", "-p", "n"], "name=value"),
        (["no.such"], "No plugin named"),
        (["test.count", "-i", "x.npy"], "path parameters"),
        (["test.load_npy", "-i", "/does/not/exist.npy"], "Cannot read"),
        (["test.load_npy", "-i", "a.npy", "-p", "source=b.npy"], "both give 'source'"),
        (["motion.inbetween", "-i", "clip.bvh", "-p", "model=m", "-p", "keep=0-0"], "`tessera4d motion --help`"),
        (["pipeline.animate_object", "-p", "checkpoint=m"], "`tessera4d mvdiff sample`, then `tessera4d fit4d`"),
    ],
)
def test_run_errors_are_one_clear_line_and_exit_1(tmp_path: Path, args: list[str], words: str) -> None:
    out = cli("run", *args, "--out", str(tmp_path / "o"), "--plugins-from", "plugins_for_tests")
    assert out.returncode == 1
    assert words in " ".join(out.stderr.split()) and "Traceback" not in out.stderr + out.stdout  # unwrapped


def test_run_prints_each_warning_of_the_job_once(tmp_path: Path) -> None:
    args = ("run", "test.count", "-p", "n=3", "-p", "warn=Nothing moves.", "--out", str(tmp_path / "o"))
    out = cli(*args, "--plugins-from", "plugins_for_tests")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Warning: Nothing moves.") == 1


def test_keys_generate_writes_both_pairs_and_authorises_the_client(tmp_path: Path) -> None:
    out = cli("keys", "generate", str(tmp_path / "k"))
    assert out.returncode == 0, out.stderr
    names = {p.name for p in (tmp_path / "k").iterdir()}
    assert {"server.key", "server.key_secret", "client.key", "client.key_secret", "authorized_clients"} <= names
    assert (tmp_path / "k" / "authorized_clients" / "client.key").read_bytes() == (
        tmp_path / "k" / "client.key"
    ).read_bytes()
    again = cli("keys", "generate", str(tmp_path / "k"))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_run_input_fills_the_required_path_of_the_built_in_mesh_loader(tmp_path: Path) -> None:
    """The README's example: `tessera4d run sequence.load_mesh --input horse.npz --out results/`
    (the loader's other path, the optional rest mesh, does not make --input ambiguous)."""
    cat = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mesh-sequences" / "cat-poses.npz"
    out = cli("run", "sequence.load_mesh", "--input", str(cat), "--out", str(tmp_path / "results"))
    assert out.returncode == 0, out.stderr
    folder = JobFolder(tmp_path / "results")
    with np.load(cat) as data:
        assert np.array_equal(folder.read_result(0)[2]["rest"], data["rest"])
        record = folder.load()
        assert record.state == "done"
        frames = np.concatenate([folder.read_result(i)[2]["positions"] for i in range(1, record.results)])
        assert np.array_equal(frames, data["frames"])
