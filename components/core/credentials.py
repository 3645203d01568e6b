"""Credentials never travel inside a tracking URI.

A URI like `https://alice:s3cret@mlflow.example.org` or `postgresql://bob:pw@db/mlflow` would
carry its password into every place that records the URI: KFP run parameters, compiled
pipelines, MLflow tags, logs and run summaries. fmpipe takes the password out once, where the URI
enters (the CLI), and hands it to the client the way that client expects it:

- an MLflow server (http/https): MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD;
- PostgreSQL: PGPASSWORD (libpq, under psycopg2, reads it; a ~/.pgpass file works as well).

Everything printed or recorded afterwards sees the URI without its password; `masked` is for
showing a URI that still has one.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

from components.core.errors import ConfigError

HTTP_USER, HTTP_PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
PG_PASSWORD = "PGPASSWORD"
_DRIVERLESS = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2"}


def _parts(uri: str) -> tuple[str, str | None, str | None, str]:
    """(scheme, user, password, host[:port]) of a URI with a network location."""
    split = urlsplit(uri)
    user = unquote(split.username) if split.username else None
    password = unquote(split.password) if split.password is not None else None
    host = split.hostname or ""
    if split.port:
        host = f"{host}:{split.port}"
    return split.scheme, user, password, host


def has_password(uri: str) -> bool:
    return "@" in uri and _parts(uri)[2] is not None


def masked(uri: str) -> str:
    """The URI as it may be shown: a password replaced by ***."""
    if not has_password(uri):
        return uri
    return re.sub(r"^([^:/]+://[^:@/]*):[^@/]*@", r"\1:***@", uri)


def _without_userinfo(uri: str, keep_user: bool) -> str:
    split = urlsplit(uri)
    scheme, user, _, host = _parts(uri)
    netloc = f"{split.username}@{host}" if keep_user and user else host
    return urlunsplit((split.scheme, netloc, split.path, split.query, split.fragment))


def secure_tracking_uri(uri: str, env: dict[str, str] | None = None) -> str:
    """The tracking URI to use and record: a password moved into the environment variable its
    client reads (`env`, default os.environ), and `postgresql://` given the driver fmpipe installs
    (SQLAlchemy 2.1 maps the bare scheme to psycopg 3). Other schemes with a password are refused."""
    env = os.environ if env is None else env
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in _DRIVERLESS:
        uri = _DRIVERLESS[scheme] + uri[len(scheme):]
        scheme = _DRIVERLESS[scheme]
    if not has_password(uri):
        return uri
    _, user, password, _ = _parts(uri)
    if scheme in ("http", "https"):
        env[HTTP_USER], env[HTTP_PASSWORD] = user or "", password or ""
        return _without_userinfo(uri, keep_user=False)
    if scheme.startswith("postgresql"):
        env[PG_PASSWORD] = password or ""
        return _without_userinfo(uri, keep_user=True)
    raise ConfigError(f"registry.tracking_uri {masked(uri)} carries a password: leave it out and give it "
                      "to the database client its own way (e.g. an option file)")


def refuse_password(uri: str, what: str) -> None:
    """For what leaves this machine (a compiled pipeline, a KFP run): no password in the URI."""
    if has_password(uri):
        raise ConfigError(
            f"registry.tracking_uri {masked(uri)} carries a password, which {what} would store in "
            "the pipeline's parameters: set the URI without it and give the pods the credentials "
            "from a Kubernetes Secret (registry.credentials_secret: a Secret with MLFLOW_TRACKING_"
            "USERNAME / MLFLOW_TRACKING_PASSWORD, or PGPASSWORD, keys)")
