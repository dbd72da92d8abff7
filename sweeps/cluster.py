"""Where a sweep's trials run: a private local Ray, or a Ray cluster whose workers are other machines.

Decided before anything is created (no Ray, torch or MLflow import, well under a second):

* the target: ``--address local`` -> a private local Ray; ``--address ADDR`` -> that cluster; no
  address -> the cluster ``RAY_ADDRESS`` or an earlier ``ray start`` on this machine names (Ray itself
  would join it, and then refuse the ``num_cpus`` vqbench passes), else a private local Ray;
* on a cluster, a tracking URI that workers on other machines cannot reach (SQLite, a folder, a loopback
  server) is refused, naming the fix.

Then :func:`connect` joins the cluster without asking for resources (it has its own), ships vqbench's
code to the workers in Ray's runtime environment, and :func:`describe_cluster` says what it found,
including package versions that differ between the driver and a node.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LOCAL = "local"
#: The packages a trial imports, shipped to cluster workers (Ray runtime env ``py_modules``).
SHIPPED_PACKAGES = ("quantizers", "benchmark", "sweeps")
#: Environment passed on to trial processes when the driver has it set.
FORWARDED_ENV = ("VQBENCH_OFFLINE", "VQBENCH_MLFLOW_RETRIES", "MLFLOW_LOGGING_LEVEL",
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING",
                 "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH")
#: Loggers whose INFO lines and warnings bury the sweep's progress (``--verbose`` keeps them). Tune's
#: warnings on an interrupt advise ``Tuner.restore``, which is not how a vqbench sweep resumes.
CHATTY_LOGGERS = {"ray": logging.WARNING, "ray.tune": logging.ERROR, "mlflow": logging.WARNING,
                  "alembic": logging.WARNING, "benchmark.tracking.store": logging.ERROR,
                  "ray._private.authentication.authentication_token_setup": logging.ERROR}
FIX = ("start a tracking server that every worker can reach -- `vqbench server --host 0.0.0.0` on one machine "
       "-- and pass the URI it prints: --tracking-uri http://HOST:5000 "
       "(or export MLFLOW_TRACKING_URI=http://HOST:5000)")


@dataclass(frozen=True)
class RayTarget:
    address: str | None   # None: start a private local Ray
    source: str           # how it was chosen, for messages

    @property
    def is_cluster(self) -> bool:
        return self.address is not None


def ray_address_file() -> Path:
    """Where ``ray start`` records the cluster that a bare ``ray.init()`` joins (as
    ``ray._common.utils.get_ray_address_file`` computes it, without importing Ray)."""
    root = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(root) / "ray" / "ray_current_cluster"


def ray_target(address: str | None) -> RayTarget:
    if address == LOCAL:
        return RayTarget(None, "--address local")
    if address:
        return RayTarget(address, "--address")
    environment = os.environ.get("RAY_ADDRESS", "").strip()
    if environment:
        return RayTarget(None, "RAY_ADDRESS=local") if environment == LOCAL else RayTarget(environment, "RAY_ADDRESS")
    recorded = ray_address_file()
    try:
        text = recorded.read_text().strip()
    except OSError:
        text = ""
    if text:
        return RayTarget(text, f"`ray start` on this machine (recorded in {recorded})")
    return RayTarget(None, "a local Ray")


def unreachable_reason(uri: str) -> str | None:
    """Why a worker on another machine cannot log to ``uri``; None when it can."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    if scheme == "sqlite":
        return "it is a SQLite file on this machine's disk"
    if scheme in ("", "file") or len(scheme) == 1:  # a path (C: on Windows)
        return "it is a folder on this machine's disk"
    if scheme in ("http", "https", "postgresql", "mysql", "mssql"):
        host = (parts.hostname or "").lower()
        if not host:
            return "it names no host"
        if host == "localhost" or _is_loopback(host):
            return f"{host} is the loopback address: each worker would look for the store on its own machine"
    return None


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def check_target(address: str | None, tracking_uri: str, num_cpus: int | None) -> RayTarget:
    """The Ray target for a sweep; ValueError, before anything is created, for what cannot work."""
    target = ray_target(address)
    if not target.is_cluster:
        return target
    if num_cpus is not None:
        raise ValueError(f"--num-cpus sizes a private local Ray, but this sweep joins the Ray cluster at "
                         f"{target.address} (from {target.source}), which has its own CPUs; drop --num-cpus, or "
                         f"pass --address local for a private local Ray")
    reason = unreachable_reason(tracking_uri)
    if reason:
        from benchmark.tracking.store import redact

        raise ValueError(f"this sweep runs on the Ray cluster at {target.address} (from {target.source}), whose "
                         f"workers cannot log to the MLflow store {redact(tracking_uri)}: {reason}. Nothing was "
                         f"created. Fix: {FIX}. To run on this machine only, pass --address local.")
    return target


def runtime_env(tracking_uri: str, cluster: bool) -> dict:
    """What every trial process gets: the store, vqbench's settings, and on a cluster vqbench's code."""
    from benchmark.tracking.store import HTTP_RETRY_DEFAULTS

    env_vars = {"MLFLOW_TRACKING_URI": tracking_uri, "RAY_CHDIR_TO_TRIAL_DIR": "0",
                **{name: os.environ.get(name, value) for name, value in HTTP_RETRY_DEFAULTS.items()}}
    env_vars.update({name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)})
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


def alive_nodes() -> list[dict]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def check_store_reachable(tracking_uri: str) -> None:
    """For a Ray the caller started: refuse a local store when some node is another machine."""
    import ray

    here = ray.util.get_node_ip_address()
    others = sorted({n["NodeManagerAddress"] for n in alive_nodes()} - {here})
    reason = unreachable_reason(tracking_uri) if others else None
    if reason:
        from benchmark.tracking.store import redact

        raise ValueError(f"the connected Ray cluster has nodes on other machines ({', '.join(others)}) that cannot "
                         f"log to the MLflow store {redact(tracking_uri)}: {reason}. Fix: {FIX}.")


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
    from benchmark.tracking.runs import package_versions
    import platform
    import socket

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
