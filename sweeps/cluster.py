"""Where a sweep's trials run: a private local Ray, or a Ray cluster whose workers are other machines.

The target and the checks that refuse what cannot work (a store the workers cannot reach, a node that
cannot reach it, an experiment whose artifacts go to a local folder) are in :mod:`sweeps.cluster_checks`
(re-exported here).

Then :func:`connect` joins the cluster without asking for resources (it has its own), ships vqbench's
code to the workers in Ray's runtime environment, and :func:`describe_cluster` says what it found,
including package versions that differ between the driver and a node.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .cluster_checks import (  # noqa: F401 - re-exported
    FIX,
    LOCAL,
    RayTarget,
    _is_local_address,
    _probe_store,
    alive_nodes,
    check_artifact_location,
    check_nodes_reach_store,
    check_store_reachable,
    check_target,
    is_network_database,
    loopback_addresses,
    ray_address_file,
    ray_target,
    unreachable_reason,
)

#: The packages a trial imports, shipped to cluster workers (Ray runtime env ``py_modules``).
SHIPPED_PACKAGES = ("quantizers", "benchmark", "sweeps")
#: Environment passed on to trial processes when the driver has it set.
#: Secrets (MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN) are NOT among them: Ray's runtime
#: environment is stored in its GCS and readable by anyone who reaches the cluster. Workers read them
#: from the environment their node was started with, or from the owner-only file that
#: VQBENCH_MLFLOW_PASSWORD_FILE names (benchmark.tracking.store.load_password_file).
FORWARDED_ENV = ("VQBENCH_OFFLINE", "VQBENCH_MLFLOW_RETRIES", "MLFLOW_LOGGING_LEVEL",
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING",
                 "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "MLFLOW_TRACKING_USERNAME",
                 "VQBENCH_MLFLOW_PASSWORD_FILE", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH")
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
#: Loggers whose INFO lines and warnings bury the sweep's progress (``--verbose`` keeps them). Tune's
#: warnings on an interrupt advise ``Tuner.restore``, which is not how a vqbench sweep resumes.
CHATTY_LOGGERS = {"ray": logging.WARNING, "ray.tune": logging.ERROR, "mlflow": logging.WARNING,
                  "alembic": logging.WARNING, "benchmark.tracking.store": logging.ERROR,
                  "ray._private.authentication.authentication_token_setup": logging.ERROR}


def runtime_env(tracking_uri: str, cluster: bool) -> dict:
    """What every trial process gets: the store, vqbench's settings, and on a cluster vqbench's code."""
    from benchmark.tracking.store import HTTP_RETRY_DEFAULTS, strip_password

    env_vars = {"MLFLOW_TRACKING_URI": strip_password(tracking_uri), "RAY_CHDIR_TO_TRIAL_DIR": "0",
                **{name: os.environ.get(name, value) for name, value in HTTP_RETRY_DEFAULTS.items()}}
    env_vars.update({name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)})
    if os.environ.get("VQBENCH_MLFLOW_PASSWORD_FILE"):
        env_vars["VQBENCH_MLFLOW_PASSWORD_FILE"] = str(Path(os.environ["VQBENCH_MLFLOW_PASSWORD_FILE"]).expanduser().resolve())
    assert not set(SECRET_ENV) & set(env_vars), "secrets never travel in Ray's runtime env"
    if os.environ.get("VQBENCH_CACHE"):
        env_vars["VQBENCH_CACHE"] = str(Path(os.environ["VQBENCH_CACHE"]).expanduser().resolve())
    environment: dict = {"env_vars": env_vars}
    if cluster:
        import importlib

        # The driver's code, not whatever vqbench a node has installed: every trial runs the same version.
        environment["py_modules"] = [importlib.import_module(name) for name in SHIPPED_PACKAGES]
        environment["excludes"] = ["__pycache__", "*.pyc"]
    return environment


def quiet_logging(verbose: bool) -> None:
    """Silence Ray's and MLflow's INFO lines and the token-auth warning, unless ``verbose``."""
    if verbose:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets its level when first imported
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run ... at" per ended run
    for name, level in CHATTY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def connect(target: RayTarget, *, tracking_uri: str, num_cpus: int | None, verbose: bool) -> bool:
    """Join the cluster or start a private local Ray, unless Ray is already up; True when this call did."""
    import ray

    if ray.is_initialized():
        return False
    quiet_logging(verbose)
    common = {"runtime_env": runtime_env(tracking_uri, target.is_cluster),
              "logging_level": logging.INFO if verbose else logging.WARNING, "log_to_driver": verbose}
    if target.is_cluster:
        ray.init(address=target.address, **common)  # no resources: an existing cluster has its own
    else:
        ray.init(address=LOCAL, num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **common)
    quiet_logging(verbose)  # ray.init configures Ray's loggers again
    return True


@dataclass
class ClusterSummary:
    nodes: int
    cpus: float
    gpus: float
    version_notes: list[str]

    def line(self, target: RayTarget, shipped: bool) -> str:
        where = f"Ray cluster at {target.address} ({target.source})" if target.is_cluster else "local Ray"
        text = f"{where}: {self.nodes} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs"
        if shipped:
            text += "; vqbench's code shipped to the workers"
        return text + "".join(f"\n  warning: {note}" for note in self.version_notes)


def _node_versions() -> dict[str, str]:
    import platform
    import socket

    from benchmark.tracking.runs import package_versions

    return {**package_versions(), "python": platform.python_version(), "host": socket.gethostname()}


def describe_cluster(check_versions: bool, timeout_s: float = 120.0) -> ClusterSummary:
    """Nodes and resources; with ``check_versions``, each node's torch/MLflow/Ray/Python against the
    driver's (a trial's numbers depend on them; the vqbench code itself is shipped)."""
    import ray

    nodes = alive_nodes()
    resources = ray.cluster_resources()
    notes: list[str] = []
    if check_versions:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(num_cpus=0)(_node_versions)
        mine = _node_versions()
        refs = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote() for n in nodes}
        try:
            found = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s)))
        except Exception as error:  # a node that cannot even run the probe will fail trials too; say so
            notes.append(f"could not read package versions on every node ({type(error).__name__}: {error})")
            found = {}
        for node, versions in found.items():
            for package in ("torch", "mlflow", "ray", "python"):
                if versions.get(package) != mine.get(package):
                    notes.append(f"node {node} ({versions.get('host')}) has {package} {versions.get(package)}, "
                                 f"the driver {mine.get(package)}: install the same versions on every node")
    return ClusterSummary(len(nodes), resources.get("CPU", 0.0), resources.get("GPU", 0.0), notes)


def gpus_per_trial(requested: float | None, cpus_per_trial: int) -> float:
    """``requested``; by default 0 without GPUs, else an equal share for every trial that fits by CPUs."""
    if requested is not None:
        return float(requested)
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    if gpus <= 0:
        return 0.0
    slots = max(cpus / cpus_per_trial, 1.0)
    return min(1.0, int(gpus / slots * 10_000) / 10_000)  # Ray takes 4 decimal places


def with_driver_paths(grid):
    """``grid`` with ``data_dir`` made absolute on the driver, so every trial process reads the same place
    (a relative path would resolve on each node, in whatever folder its worker started)."""
    from dataclasses import replace

    if not grid.base.data_dir:
        return grid
    absolute = str(Path(grid.base.data_dir).expanduser().resolve())
    return replace(grid, base=replace(grid.base, data_dir=absolute))
