"""Start an MLflow tracking server for a team or a Ray cluster, and print the URI its clients use.

Runs (params, metrics, tags) go to the database --backend-store-uri: SQLite on this machine's disk by
default, or a PostgreSQL / MySQL URI. Artifacts (images, config.json) go through the same server to
--artifacts-destination, so cluster workers need no shared disk. The server listens on 127.0.0.1 unless
--host is given; every machine that can reach a --host address can read and change the runs, so use
--auth (MLflow's basic-auth app) on a shared network. Ctrl-C stops it.

examples:
  vqbench server                                 # ./mlflow.db, http://127.0.0.1:5000 (this machine only)
  vqbench server --host 0.0.0.0                  # for Ray workers on other machines (warns: no auth)
  MLFLOW_AUTH_ADMIN_PASSWORD=... vqbench server --host 0.0.0.0 --auth
  vqbench server --backend-store-uri postgresql://vq@db.internal/vqbench --host 0.0.0.0

Clients then use the printed URI:  export MLFLOW_TRACKING_URI=http://HOST:5000  (or --tracking-uri).
With --auth they also set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.

A database password never goes on a command line (where `ps` shows it): put it in $VQBENCH_DB_PASSWORD
or in a file (mode 0600) named by --db-password-file; the MLflow server gets the store's URI through
its environment. A new SQLite store and basic_auth.db are created owner-only (0600).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
AUTH_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
DB_PASSWORD_ENV = "VQBENCH_DB_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend-store-uri", default=None,
                        help="database for runs [$MLFLOW_TRACKING_URI if it is a database, else "
                             "sqlite:///mlflow.db in this folder]; postgresql:// and mysql:// accepted")
    parser.add_argument("--artifacts-destination", default=None,
                        help="where the server stores artifacts [mlartifacts/ beside a SQLite store, else "
                             "./mlartifacts]")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on [127.0.0.1: this machine only]; 0.0.0.0 for a cluster")
    parser.add_argument("--port", type=int, default=5000, help="port [5000]")
    parser.add_argument("--workers", type=int, default=None,
                        help="server processes [1 for SQLite, which serializes writes anyway; else 4]")
    parser.add_argument("--auth", action="store_true",
                        help=f"MLflow's basic-auth app: clients need a user and password (the admin's is "
                             f"${AUTH_PASSWORD_ENV} on first start)")
    parser.add_argument("--db-password-file", default=None, metavar="FILE",
                        help=f"a file (mode 0600) holding the database's password [${DB_PASSWORD_ENV}]; "
                             "never put it in --backend-store-uri, where `ps` shows it")


def backend_store(uri: str | None) -> str:
    """The database the server writes to; ValueError for anything else."""
    from benchmark.tracking.runs import resolve_tracking_uri

    if uri is None:
        environment = os.environ.get("MLFLOW_TRACKING_URI", "")
        uri = environment if environment.split(":")[0].split("+")[0] in DATABASE_SCHEMES else "sqlite:///mlflow.db"
    if uri.startswith("sqlite:") and (":memory:" in uri or not uri.startswith("sqlite:///")
                                      or not uri[len("sqlite:///"):].split("?")[0].strip()):
        raise ValueError(f"--backend-store-uri {uri!r} is an in-memory SQLite database: it would vanish with the "
                         "server and cannot be shared by its workers; give a file, e.g. sqlite:///mlflow.db")
    uri = resolve_tracking_uri(uri)
    scheme = uri.split(":")[0].split("+")[0]
    if scheme in ("http", "https"):
        raise ValueError(f"--backend-store-uri {uri!r} is a server; give the database the server should write to "
                         "(sqlite:///mlflow.db, postgresql://..., mysql://...)")
    if scheme not in DATABASE_SCHEMES:
        raise ValueError(f"--backend-store-uri must be a database URI (sqlite:///FILE, postgresql://..., "
                         f"mysql://...); got {uri!r}")
    return uri


def with_database_password(uri: str, given_on_command_line: bool, password_file: str | None) -> str:
    """``uri`` with the database password from $VQBENCH_DB_PASSWORD or ``password_file`` (owner-only)
    added; a password written in the URI on the command line is refused (`ps` would show it)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is not None and given_on_command_line:
        raise ValueError("--backend-store-uri holds a password, which `ps` shows to every user of this machine; "
                         f"drop it from the URI and put it in ${DB_PASSWORD_ENV} or a file given with "
                         "--db-password-file (chmod 600)")
    password = None
    if password_file:
        path = Path(password_file).expanduser()
        try:
            mode = path.stat().st_mode & 0o777
            password = path.read_text().strip()
        except OSError as error:
            raise ValueError(f"--db-password-file {path}: cannot read it ({error.strerror})") from None
        if mode & 0o077:
            raise ValueError(f"--db-password-file {path} is readable by other users (mode {mode:o}); chmod 600 {path}")
    password = password or os.environ.get(DB_PASSWORD_ENV)
    if not password:
        return uri
    if parts.scheme.startswith("sqlite"):
        raise ValueError(f"a database password ({DB_PASSWORD_ENV} or --db-password-file) means nothing to SQLite")
    if not parts.username:
        raise ValueError("a database password needs a user in --backend-store-uri (postgresql://USER@HOST/DB)")
    netloc = f"{quote(parts.username, safe='')}:{quote(password, safe='')}@{parts.hostname}" + (
        f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def machine_address() -> str:
    """This machine's address as other machines see it (the one Ray's nodes advertise)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("8.8.8.8", 80))  # UDP: no packet is sent; picks the outward interface
            return probe.getsockname()[0]
        except OSError:
            pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def client_uri(host: str, port: int) -> str:
    """The tracking URI clients use for a server listening on ``host``."""
    if host in ("0.0.0.0", "::", ""):
        host = machine_address()
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def allowed_hosts(host: str, port: int) -> str | None:
    """MLflow answers only requests whose Host header it knows (against DNS rebinding): loopback and
    private ranges by default. A server for other machines must also accept the names they use."""
    import socket

    if host in LOOPBACK or os.environ.get("MLFLOW_SERVER_ALLOWED_HOSTS"):
        return None
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = {machine_address(), socket.gethostname(), socket.getfqdn()}
    if host not in ("0.0.0.0", "::"):
        names.add(host)
    extra = sorted(f"{name}{suffix}" for name in names if name for suffix in ("", f":{port}"))
    return ",".join(get_default_allowed_hosts() + extra)


def port_is_listened(port: int, host: str) -> bool:
    """True when a server already listens on host:port. SO_REUSEADDR, as the server itself binds: the
    connections a just-stopped server leaves in TIME_WAIT do not block a restart on its port."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def auth_environment(directory: Path) -> dict[str, str]:
    """MLflow's basic-auth settings beside the store: its users in ``basic_auth.db``, the config that
    points there, and the secret key its CSRF checks need (kept in ``basic_auth.secret``, owner-only,
    so that a restart keeps clients' sessions valid; $MLFLOW_FLASK_SERVER_SECRET_KEY wins)."""
    import importlib.util
    import secrets

    if importlib.util.find_spec("flask_wtf") is None:
        raise ValueError("--auth needs MLflow's auth extra (Flask-WTF, for CSRF checks): pip install 'mlflow[auth]'")
    from benchmark.tracking.store import create_private

    users = directory / "basic_auth.db"
    if not (users.exists() and users.stat().st_size) and not os.environ.get(AUTH_PASSWORD_ENV):
        raise ValueError(f"--auth: set {AUTH_PASSWORD_ENV} to the admin's password for the first start "
                         f"(MLflow creates the admin user then); clients log in with MLFLOW_TRACKING_USERNAME "
                         "and MLFLOW_TRACKING_PASSWORD")
    directory.mkdir(parents=True, exist_ok=True)  # a new store folder: created before anything is written
    create_private(users)  # the users' password hashes: owner-only
    config = directory / "basic_auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{users}\nadmin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    secret = os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
    if not secret:
        path = directory / "basic_auth.secret"
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(32))
        secret = path.read_text().strip()
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": secret}


def server_command(store_uri: str, artifacts: Path, host: str, port: int, workers: int, auth: bool) -> list[str]:
    """The MLflow server's argv. The store's URI is not in it (``ps`` shows argv to every user): the
    server reads it from $MLFLOW_BACKEND_STORE_URI (see :func:`run`)."""
    command = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts",
               "--artifacts-destination", str(artifacts), "--host", host, "--port", str(port),
               "--workers", str(workers)]
    hosts = allowed_hosts(host, port)
    if hosts:
        command += ["--allowed-hosts", hosts]
    if auth:
        command += ["--app-name", "basic-auth"]
    return command


def run(args: argparse.Namespace) -> int:
    import signal
    import subprocess

    from benchmark.tracking.store import create_private, redact, sqlite_path
    from benchmark.tracking.ui import server_environment, stop_process, wait_until_serving

    store_uri = backend_store(args.backend_store_uri)
    store_uri = with_database_password(store_uri, args.backend_store_uri is not None,
                                       getattr(args, "db_password_file", None))
    database = sqlite_path(store_uri)
    home = database.parent if database else Path.cwd()
    artifacts = Path(args.artifacts_destination or home / "mlartifacts").expanduser().resolve()
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535; got {args.port}")
    if port_is_listened(args.port, "0.0.0.0" if args.host not in LOOPBACK else "127.0.0.1"):
        raise ValueError(f"port {args.port} is already in use; choose another with --port")
    workers = args.workers or (1 if database else 4)
    environment = server_environment()
    environment["MLFLOW_BACKEND_STORE_URI"] = store_uri  # not argv: `ps` shows argv to every user
    environment.pop(DB_PASSWORD_ENV, None)
    if database:
        database.parent.mkdir(parents=True, exist_ok=True)
        create_private(database)  # owner-only from its first byte
    if args.auth:
        environment.update(auth_environment(home))
    uri = client_uri(args.host, args.port)
    if args.host not in LOOPBACK:
        exposure = ("clients must log in" if args.auth else
                    "with no authentication: anyone who reaches it can read, change and delete the runs; "
                    "add --auth, or keep it behind a firewall or an SSH tunnel")
        print(f"vqbench server: warning: listening on {args.host}:{args.port}, {exposure}", file=sys.stderr)
    print(f"MLflow tracking server for {redact(store_uri)}, artifacts in {artifacts}\n"
          f"  starting on {args.host}:{args.port} ...", flush=True)
    server = subprocess.Popen(server_command(store_uri, artifacts, args.host, args.port, workers, args.auth),
                              env=environment)
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        wait_until_serving(f"http://127.0.0.1:{args.port}" if args.host in ("0.0.0.0", "::") else uri, server)
        reach = "this machine only" if args.host in LOOPBACK else "every machine that reaches this address"
        print(f"ready; tracking URI ({reach}):\n  export MLFLOW_TRACKING_URI={uri}\n"
              f"  (or: vqbench sweep --tracking-uri {uri} ...; vqbench ui is not needed: open {uri})", flush=True)
        return server.wait()
    except RuntimeError:  # the server exited before serving; its own error is printed above
        raise ValueError(f"the MLflow server exited with code {server.returncode} before serving; "
                         "its own error is printed above") from None
    except KeyboardInterrupt:
        stop_process(server)
        raise
    except BaseException:
        if server.poll() is None:
            server.terminate()
        raise
