"""Reach the registry within a bounded time: a clear error, never a hang, when a server is down.

MLflow's HTTP client retries 7 times with exponential backoff and waits 120 s per request by
default: minutes before an unreachable server is reported. fmpipe asks for less (its own
`registry.server_timeout_s` / `server_retries`) and checks `/health` once before doing anything.
"""

from __future__ import annotations

from components.core.credentials import masked
from components.core.errors import FmpipeError


class RegistryUnreachableError(FmpipeError):
    """The MLflow tracking server did not answer in time."""


def http_limits_env(timeout_s: int, retries: int) -> dict[str, str]:
    """MLflow's HTTP settings (read at each request) for a bounded wait."""
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    }


DATABASE_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}


def check_database_reachable(tracking_uri: str, timeout_s: float) -> None:
    """For a database URI: its host accepts a connection within timeout_s, else one clear error
    (MLflow's own engine would retry for minutes, printing the same error over and over)."""
    import socket
    from urllib.parse import urlsplit

    split = urlsplit(tracking_uri)
    dialect = split.scheme.split("+", 1)[0].lower()
    if dialect not in DATABASE_PORTS or not split.hostname:
        return  # sqlite, or a socket path: nothing to reach over the network
    port = split.port or DATABASE_PORTS[dialect]
    try:
        socket.create_connection((split.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        why = "connection refused" if isinstance(exc, ConnectionRefusedError) else (
            f"no answer within {timeout_s:g} s" if isinstance(exc, TimeoutError) else str(exc) or "failed")
        raise RegistryUnreachableError(
            f"cannot reach the {dialect} database at {split.hostname}:{port} ({why}); is it running? "
            "(set registry.tracking_uri)") from None


def check_reachable(tracking_uri: str, timeout_s: float) -> None:
    """For an http(s) tracking URI: one GET /health, answered within timeout_s, else one clear error;
    for a database URI, one TCP connection to its host."""
    if not tracking_uri.startswith(("http://", "https://")):
        check_database_reachable(tracking_uri, timeout_s)
        return
    import requests

    url = tracking_uri.rstrip("/") + "/health"
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.Timeout:
        why = f"no answer within {timeout_s:g} s"
    except requests.ConnectionError as exc:
        why = "connection refused" if "refused" in str(exc).lower() else "connection failed"
    else:
        if response.status_code == 200:
            return
        why = f"/health answered HTTP {response.status_code}"
    raise RegistryUnreachableError(
        f"cannot reach the MLflow tracking server at {masked(tracking_uri)} ({why}); is it running? "
        "(set registry.tracking_uri)")
