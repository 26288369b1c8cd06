"""The job folder: records written atomically, results stored exactly, stale jobs marked on load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.job_store import FAILED, RUNNING, JobStore, check_job_id
from shared.errors import ErrorCode, ParamError


def test_result_round_trip_keeps_dtypes_shapes_meta_and_type(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("job-1", "test.count", {"n": 3, "path": Path("/x")})
    folder = store.folder("job-1")
    arrays = {
        "positions": np.random.default_rng(0).random((2, 5, 3), dtype=np.float32),
        "faces": np.arange(6, dtype=np.int32).reshape(2, 3),
        "mask": np.array([True, False]),
        "scalar": np.float64(2.5) * np.ones(()),
    }
    path = folder.write_result(0, "mesh.frames", {"start": np.int64(4), "name": "Horse"}, arrays)
    assert path.name == "000000.npz" and not list(folder.results_dir.glob(".*tmp"))
    type_, meta, back = folder.read_result(0)
    assert type_ == "mesh.frames" and meta == {"start": 4, "name": "Horse"}
    assert set(back) == set(arrays)
    for name, arr in arrays.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape
        np.testing.assert_array_equal(back[name], arr)


def test_record_is_json_and_params_that_are_not_jsonable_are_left_out(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("j", "p", {"n": 3, "obj": object(), "arr": np.arange(2)})
    data = json.loads((tmp_path / "j" / "job.json").read_text())
    assert data["params"] == {"n": 3, "arr": [0, 1]} and data["state"] == "queued" and data["created"] > 0
    assert not list(tmp_path.glob("j/.*tmp"))


def test_the_clients_notes_are_kept_with_the_job_and_listed(tmp_path: Path) -> None:
    """Submit.client (the add-on's options: which objects the results go to) survives a backend restart."""
    store = JobStore(tmp_path)
    store.create("j", "rig.from_motion", {"bones": 4}, {"rig_source": "Cat", "rig_source_uid": 7, "kept": [1, 2]})
    record = JobStore(tmp_path).load_all()["j"]
    assert record.client == {"rig_source": "Cat", "rig_source_uid": 7, "kept": [1, 2]}
    assert record.summary()["client"] == record.client
    assert store.create("k", "p", {}).client == {}


def test_duplicate_and_unsafe_job_ids_are_refused(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("a", "p", {})
    with pytest.raises(ParamError, match="already used"):
        store.create("a", "p", {})
    for bad in ["", "..", "../a", "a/b", ".hidden", "x" * 65, "a b"]:
        with pytest.raises(ParamError) as err:
            check_job_id(bad)
        assert err.value.code == ErrorCode.MALFORMED


def test_jobs_left_running_by_a_dead_backend_become_failed_and_keep_their_results(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    record = store.create("r", "test.count", {})
    folder = store.folder("r")
    for i in range(3):
        folder.write_result(i, "mesh.frames", {"start": i}, {"positions": np.full((1, 2, 3), i, np.float32)})
    record.state, record.results = RUNNING, 2  # the third result was written, job.json not yet updated
    folder.save(record)
    store.create("q", "test.count", {})
    (tmp_path / "junk").mkdir()  # not a job folder: ignored

    loaded = JobStore(tmp_path).load_all()
    assert set(loaded) == {"r", "q"}
    r = loaded["r"]
    assert r.state == FAILED and r.error_code == "backend_stopped" and r.results == 3
    assert "3 result(s)" in r.error_message and "running" in r.error_message
    assert loaded["q"].state == FAILED and loaded["q"].results == 0
    assert json.loads((tmp_path / "r" / "job.json").read_text())["state"] == "failed"
    np.testing.assert_array_equal(folder.read_result(2)[2]["positions"], np.full((1, 2, 3), 2, np.float32))
