"""The README's claims that code can check: its plugin example runs, CI runs its test command."""

import re
from pathlib import Path

import numpy as np

from backend.plugin_host import JobContext, Output, Progress
from shared.results import check_mesh_frames, check_mesh_rest
from shared.schemas import validate_params

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_plugin_example_yields_valid_results(tmp_path):
    (example,) = [b for b in code_blocks("python") if "class Wobble" in b]
    namespace: dict = {}
    exec(compile(example, "README plugin example", "exec"), namespace)
    plugin = namespace["Wobble"]
    rest = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    ctx = JobContext(
        job_id="readme",
        params=validate_params(plugin.spec, {"frames": 5}),
        arrays={"rest": rest, "faces": np.array([[0, 1, 2]], np.int32)},
        job_dir=tmp_path,
    )
    events = list(plugin().run(ctx))
    outputs = [e for e in events if isinstance(e, Output)]
    check_mesh_rest(outputs[0].arrays, outputs[0].meta)
    assert [check_mesh_frames(o.arrays, o.meta, 50).shape for o in outputs[1:]] == [(1, 50, 3)] * 5
    assert [e for e in events if isinstance(e, Progress)][-1].fraction == 1.0


def test_ci_runs_the_readme_test_command():
    (quick_start,) = [b for b in code_blocks("bash") if "set up and run the tests" in b]
    test_command = quick_start.strip().splitlines()[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines()
