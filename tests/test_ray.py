"""Sweeps on a local Ray cluster give the same results and report as the local executor, and
survive workers that die mid-run."""

import json

import pytest

ray = pytest.importorskip("ray")

from sparse_rtrl.experiments import Sweep  # noqa: E402
from sparse_rtrl.experiments.ray_executor import RayExecutor  # noqa: E402
from sparse_rtrl.experiments.report import build_report  # noqa: E402

from faults import crash_once  # noqa: E402
from test_experiments import finished, tiny  # noqa: E402,F401  (the local sweep fixture)

pytestmark = pytest.mark.ray


def scores(out):
    return {p.relative_to(out).as_posix(): (json.loads(p.read_text())["result"]["L"],
                                            json.loads(p.read_text())["result"]["L_end"])
            for p in sorted((out / "runs").rglob("seed*.json"))}


@pytest.fixture(scope="module")
def ray_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray")
    executor = RayExecutor(workers=2)
    try:
        assert Sweep(out, tiny(), executor=executor, profile="test", progress=False).run()
    finally:
        executor.close()
    build_report(out)
    return out


def test_ray_sweep_equals_local_sweep(ray_sweep, finished):  # noqa: F811
    assert scores(ray_sweep) == scores(finished)
    assert (ray_sweep / "report.md").read_bytes() == (finished / "report.md").read_bytes()
    assert (ray_sweep / "claims.json").read_bytes() == (finished / "claims.json").read_bytes()


def test_sweep_survives_killed_workers(tmp_path, finished):  # noqa: F811
    executor = RayExecutor(workers=2)
    try:
        assert Sweep(tmp_path / "out", tiny(), executor=executor, profile="test", progress=False,
                     task=crash_once(tmp_path / "markers")).run()
    finally:
        executor.close()
    killed = list((tmp_path / "markers").iterdir())
    assert len(killed) >= 3  # every odd-seed run lost its first worker
    build_report(tmp_path / "out")
    assert scores(tmp_path / "out") == scores(finished)
    assert (tmp_path / "out/report.md").read_bytes() == (finished / "report.md").read_bytes()
