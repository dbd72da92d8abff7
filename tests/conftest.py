"""Shared fixtures: one torch thread (CI has 2 cores), a temporary MLflow SQLite store per test, and one
local Ray for every test that needs it.

The local Ray (``local_ray``, two CPUs, no dashboard) is started once per session, the first time a test
asks for it, and shut down at the end: starting Ray costs seconds and leaves nothing a later test could
see (each sweep has its own MLflow store, storage folder and name). The modules whose tests use it run
after the others (in their usual order), so the idle Ray does not sit beside the rest of the suite.
"""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
torch.set_num_threads(1)


def pytest_collection_modifyitems(session, config, items):
    """Run the modules that use the shared Ray last, keeping the order of modules and of tests."""
    ray_modules = {item.module.__name__ for item in items
                   if "local_ray" in getattr(item, "fixturenames", ()) and getattr(item, "module", None)}
    if ray_modules:
        items[:] = sorted(items, key=lambda item: getattr(item, "module", None) is not None
                          and item.module.__name__ in ray_modules)


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray with two CPUs for in-process sweeps, shared by the session (see the module docstring)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    """A fresh SQLite MLflow store (absolute path: four slashes), set as MLFLOW_TRACKING_URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)
