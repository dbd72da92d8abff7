"""What a sweep on a Ray cluster is refused for: the Ray target (chosen before anything is created), a
tracking store that workers on other machines cannot reach, and the per-node checks once Ray is up.

Decided before anything is created (no Ray, torch or MLflow import, well under a second):

* the target: ``--address local`` -> a private local Ray; ``--address ADDR`` -> that cluster; no
  address -> the cluster ``RAY_ADDRESS`` or an earlier ``ray start`` on this machine names (Ray itself
  would join it, and then refuse the ``num_cpus`` vqbench passes), else a private local Ray;
* on a cluster, a tracking URI that workers on other machines cannot reach (SQLite, a folder, a server
  or database whose host RESOLVES to a loopback or unspecified address: localhost, 127.1, 0,
  [::ffff:127.0.0.1], a name in /etc/hosts) is refused, naming the fix.

Once Ray is up, :func:`check_nodes_reach_store` runs one task on every node that asks the tracking
server's ``/health`` (or opens a TCP connection to the database) before the first trial, and
:func:`check_artifact_location` refuses an experiment whose artifacts go to a local folder.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LOCAL = "local"
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
    if uri.strip().lower() in ("databricks", "databricks-uc", "uc") or scheme.startswith("databricks"):
        return None  # a hosted store, named by profile
    if scheme == "sqlite":
        return "it is a SQLite file on this machine's disk"
    if scheme in ("", "file") or len(scheme) == 1:  # a path (C: on Windows)
        return "it is a folder on this machine's disk"
    if scheme in ("http", "https", "postgresql", "mysql", "mssql"):
        try:
            host = (parts.hostname or "").lower()
        except ValueError:
            return "its host is malformed"
        if not host:
            return "it names no host"
        local = loopback_addresses(host)
        if local:
            shown = host if local == [host] else f"{host} (resolves to {', '.join(local)})"
            return f"{shown} is a loopback address: each worker would look for the store on its own machine"
    return None


def _is_local_address(address: ipaddress._BaseAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_loopback or address.is_unspecified


def loopback_addresses(host: str) -> list[str]:
    """The loopback or unspecified addresses ``host`` stands for (resolving names and short forms such as
    127.1 or 0 as the socket layer does); [] when it is none or cannot be resolved here."""
    import socket

    host = host.strip("[]")
    try:
        if _is_local_address(ipaddress.ip_address(host)):
            return [host]
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return [host]
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []  # not resolvable here: the per-node check (check_nodes_reach_store) will tell
    found = []
    for info in infos:
        address = info[4][0].split("%")[0]
        try:
            if _is_local_address(ipaddress.ip_address(address)) and address not in found:
                found.append(address)
        except ValueError:
            continue
    return found


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


def _probe_store(uri: str, timeout_s: float) -> tuple[str, str | None]:
    """Runs on one node: (host, None) when the store answers from there, else (host, why not)."""
    import socket
    import urllib.request

    host = socket.gethostname()
    parts = urlsplit(uri)
    try:
        if parts.scheme in ("http", "https"):
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
                if response.status != 200:
                    return host, f"GET /health answered {response.status}"
        elif parts.hostname:
            default = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}.get(parts.scheme.split("+")[0], 0)
            with socket.create_connection((parts.hostname, parts.port or default), timeout=timeout_s):
                pass
    except Exception as error:  # noqa: BLE001 - any failure is the answer
        return host, f"{type(error).__name__}: {error}"
    return host, None


def check_nodes_reach_store(tracking_uri: str, timeout_s: float = 10.0) -> int:
    """One Ray task on every alive node asks the store (a server's /health, a database's port) before
    the first trial; ValueError naming the nodes that cannot reach it. Returns the nodes checked."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from benchmark.tracking.store import redact

    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") and not (is_network_database(tracking_uri) and parts.hostname):
        return 0
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe_store)
    nodes = alive_nodes()
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(tracking_uri, timeout_s) for n in nodes]
    try:
        answers = ray.get(refs, timeout=timeout_s + 110)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"could not check from every Ray node that the MLflow store {redact(tracking_uri)} "
                         f"answers ({type(error).__name__}: {error}); nothing was run") from None
    failed = [f"node {n['NodeManagerAddress']} ({host}): {why}" for n, (host, why) in zip(nodes, answers) if why]
    if failed:
        raise ValueError(f"the MLflow store {redact(tracking_uri)} does not answer from every Ray node, so their "
                         f"trials could not log: {'; '.join(failed)}. No trial was started. Fix: {FIX}; check "
                         "firewalls between the nodes and the store")
    return len(nodes)


def is_network_database(uri: str) -> bool:
    return urlsplit(uri).scheme.split("+")[0].lower() in ("postgresql", "mysql", "mssql")


def check_artifact_location(client, experiment_id: str, experiment: str) -> None:
    """On a cluster: refuse an experiment whose artifact location is a folder (created by a local store
    before the server existed): each worker would write its artifacts to its own disk."""
    location = client.get_experiment(experiment_id).artifact_location or ""
    scheme = urlsplit(location).scheme.lower()
    if scheme in ("", "file") or len(scheme) == 1:
        raise ValueError(f"experiment {experiment!r} keeps its artifacts in the local folder {location!r} (it was "
                         "created before the tracking server, by a local store): workers on other machines would "
                         "write them to their own disks. Fix: pass another --experiment name (a new experiment "
                         "gets the server's artifact store), or delete that experiment. Nothing was run.")
