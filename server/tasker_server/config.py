"""Server configuration: documented defaults < config file < environment < flags.

Every setting is declared once in ``SETTINGS`` with its type, default and meaning; the README's
configuration table is rendered from the same list (``render_markdown()``), so the docs cannot
drift from the code. A config file is YAML with the setting names as keys. Environment variables
are ``TASKER_<NAME>`` in upper case. A broken file stops the server with a message naming the file,
the key and the problem (``ConfigError``).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasker_server.domain.access import (
    AuthFileError,
    Principal,
    check_unique,
    legacy_principals,
    parse_auth_file,
    token_problem,
)
from tasker_server.domain.limits import Limits

__all__ = ["SETTINGS", "ConfigError", "Setting", "Settings", "load_settings", "render_markdown"]


class ConfigError(Exception):
    """A configuration source holds an unusable value."""


def _parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _parse_int(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"expected an integer, got {raw!r}")
    if isinstance(raw, int):
        return raw
    try:
        return int(str(raw).strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


def _parse_float(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"expected a number, got {raw!r}")
    if isinstance(raw, int | float):
        return float(raw)
    try:
        return float(str(raw).strip())
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None


def _parse_str(raw: object) -> str:
    if isinstance(raw, dict | list):
        raise ValueError(f"expected a string, got {type(raw).__name__}")
    return str(raw)


def _parse_listen(raw: object) -> str:
    text = _parse_str(raw).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:50051), got {text!r}")
    return text


def _parse_optional_listen(raw: object) -> str:
    text = _parse_str(raw).strip()
    return _parse_listen(text) if text else ""


def _parse_choice(*choices: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        text = _parse_str(raw).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return text

    return parse


def _positive(parse: Callable[[object], float]) -> Callable[[object], float]:
    def check(raw: object) -> float:
        value = parse(raw)
        if value <= 0:
            raise ValueError(f"must be greater than 0, got {value}")
        return value

    return check


def _positive_int(raw: object) -> int:
    value = _parse_int(raw)
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _default_server_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration key."""

    name: str
    parse: Callable[[object], Any]
    default: Any
    doc: str

    @property
    def env(self) -> str:
        return f"TASKER_{self.name.upper()}"


SETTINGS: tuple[Setting, ...] = (
    Setting("listen", _parse_listen, "127.0.0.1:50051", "gRPC listen address HOST:PORT."),
    Setting(
        "database_url",
        _parse_str,
        "sqlite+aiosqlite:///tasker.db",
        "SQLAlchemy URL. Default: a SQLite file `tasker.db` in the working directory. "
        "PostgreSQL: `postgresql://user:pass@host:5432/db`.",
    ),
    Setting(
        "migrate_on_start",
        _parse_bool,
        True,
        "Apply Alembic migrations at startup (else run `tasker migrate`).",
    ),
    Setting(
        "environment",
        _parse_str,
        "",
        "Name of the environment whose template overrides apply (e.g. `production`).",
    ),
    Setting(
        "templates_dir",
        _parse_str,
        "",
        "Directory of `*.yaml` templates registered at startup (empty: none).",
    ),
    Setting("log_level", _parse_choice("debug", "info", "warning", "error"), "info", "Log level."),
    Setting(
        "log_format", _parse_choice("json", "text"), "json", "Structured JSON lines or plain text."
    ),
    # -- observability (issue 5) --
    Setting(
        "metrics_listen",
        _parse_optional_listen,
        "",
        "Prometheus `/metrics` HTTP address HOST:PORT, e.g. `127.0.0.1:9464` (empty: off).",
    ),
    # -- end observability --
    Setting("server_id", _parse_str, "", "Replica id (default: host-pid-random)."),
    Setting(
        "heartbeat_interval_seconds",
        _positive(_parse_float),
        5.0,
        "How often workers heartbeat their leases.",
    ),
    Setting(
        "keepalive_interval_seconds",
        _positive(_parse_float),
        5.0,
        "How often the server pings each worker stream.",
    ),
    Setting(
        "keepalive_timeout_seconds",
        _positive(_parse_float),
        15.0,
        "Silence after which a worker stream is considered dead and its leases released.",
    ),
    Setting(
        "ack_timeout_seconds",
        _positive(_parse_float),
        10.0,
        "Time a worker has to acknowledge an assignment before it is re-offered.",
    ),
    Setting(
        "lease_grace_seconds",
        _positive(_parse_float),
        5.0,
        "Extra time past a step's timeout before its lease expires (network slack).",
    ),
    Setting(
        "sweep_interval_seconds",
        _positive(_parse_float),
        1.0,
        "How often expired leases, due retries and deadlines are swept.",
    ),
    Setting(
        "trace_hops_file",
        _parse_str,
        "",
        "Debug: append one JSON line per lease per hop point (claimed, queued, written, "
        "result_read, tick_start, commit) to this file; read by `python -m bench --hops`.",
    ),
    Setting(
        "max_unrecorded_outcomes",
        _positive_int,
        10_000,
        "Acknowledgements and outcomes held in memory while the database is unreachable; past "
        "it, workers are answered UNAVAILABLE and keep their results until it returns.",
    ),
    # -- observability (issue 5) --
    Setting(
        "event_retention_seconds",
        _positive(_parse_float),
        7 * 24 * 3600.0,
        "Events older than this are pruned (checked once a minute); see docs/events.md.",
    ),
    # -- end observability --
    Setting(
        "max_parallel_tasks",
        _positive_int,
        10_000,
        "Server-wide cap on tasks in progress (per-namespace caps: AdminService.UpdateNamespace).",
    ),
    # -- resource limits on client input (issue 11; docs/security.md) --
    Setting(
        "max_watch_streams",
        _positive_int,
        5000,
        "Concurrent WatchTask/WatchEvents streams per server; more get RESOURCE_EXHAUSTED.",
    ),
    Setting(
        "max_watch_streams_per_client",
        _positive_int,
        1000,
        "Concurrent watch streams per client (its authenticated identity if any, else its peer "
        "address); more get RESOURCE_EXHAUSTED.",
    ),
    Setting(
        "max_message_bytes",
        _positive_int,
        8 * 1024 * 1024,
        "Largest gRPC message received or sent; a larger request gets RESOURCE_EXHAUSTED.",
    ),
    Setting(
        "max_template_bytes",
        _positive_int,
        256 * 1024,
        "Largest template YAML (UTF-8 bytes); larger gets RESOURCE_EXHAUSTED.",
    ),
    Setting(
        "max_template_nodes",
        _positive_int,
        20_000,
        "YAML nodes in one template, each alias counted as the nodes it repeats (so this bounds "
        "the size after expansion); more gets INVALID_ARGUMENT naming `yaml`.",
    ),
    Setting(
        "max_steps_per_template",
        _positive_int,
        1000,
        "Step templates in one template; more gets INVALID_ARGUMENT naming `step_templates`.",
    ),
    Setting(
        "max_payload_bytes",
        _positive_int,
        1024 * 1024,
        "Largest task context or manually completed step result (compact JSON); larger gets "
        "RESOURCE_EXHAUSTED. Results reported by workers have a fixed 1 MiB limit.",
    ),
    Setting(
        "max_nesting_depth",
        _positive_int,
        32,
        "How deeply lists and objects may nest in template YAML, task contexts, step results and "
        "error metadata; deeper gets INVALID_ARGUMENT. protobuf itself refuses a Struct nested "
        "past about 33 levels (its recursion limit of 100 messages).",
    ),
    # -- end resource limits --
    Setting(
        "shutdown_grace_seconds",
        _positive(_parse_float),
        10.0,
        "Time given to in-flight RPCs on SIGTERM/SIGINT.",
    ),
    Setting("tls_cert_file", _parse_str, "", "PEM certificate: serve TLS when set with the key."),
    Setting("tls_key_file", _parse_str, "", "PEM private key for tls_cert_file."),
    Setting(
        "auth_tokens_file",
        _parse_str,
        "",
        "File of accepted bearer tokens, one per line (several allow rotation); when set, every "
        "call but health checks and reflection needs `authorization: Bearer <token>`. Each "
        "such token is an admin on every namespace (see Authorization).",
    ),
    # -- authorization (issue 11) --
    Setting(
        "auth_file",
        _parse_str,
        "",
        "YAML/JSON file of principals (identity, token or token_sha256, namespaces, roles); when "
        "set, every call is authorized by role and namespace (see Authorization). Re-read when it "
        "changes (checked at most once a second) or on SIGHUP; an invalid new version is logged "
        "and the last good one kept.",
    ),
    Setting(
        "tls_client_ca_file",
        _parse_str,
        "",
        "PEM CA bundle: with TLS, require client certificates signed by it (mTLS); a "
        "certificate's SAN or CN names its principal in auth_file.",
    ),
    # -- end authorization --
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved configuration of one server process (defaults live in ``SETTINGS`` only)."""

    listen: str
    database_url: str
    migrate_on_start: bool
    environment: str
    templates_dir: str
    log_level: str
    log_format: str
    metrics_listen: str
    server_id: str
    heartbeat_interval_seconds: float
    keepalive_interval_seconds: float
    keepalive_timeout_seconds: float
    ack_timeout_seconds: float
    lease_grace_seconds: float
    sweep_interval_seconds: float
    trace_hops_file: str
    max_unrecorded_outcomes: int
    event_retention_seconds: float
    max_parallel_tasks: int
    max_watch_streams: int
    max_watch_streams_per_client: int
    max_message_bytes: int
    max_template_bytes: int
    max_template_nodes: int
    max_steps_per_template: int
    max_payload_bytes: int
    max_nesting_depth: int
    shutdown_grace_seconds: float
    tls_cert_file: str
    tls_key_file: str
    auth_tokens_file: str
    auth_file: str
    tls_client_ca_file: str

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def limits(self) -> Limits:
        """The limits on client input, as the domain sees them."""
        return Limits(
            template_bytes=self.max_template_bytes,
            template_nodes=self.max_template_nodes,
            nesting_depth=self.max_nesting_depth,
            steps_per_template=self.max_steps_per_template,
            payload_bytes=self.max_payload_bytes,
        )


def _apply(source: str, name: str, raw: object, into: dict[str, Any]) -> None:
    setting = _BY_NAME.get(name)
    if setting is None:
        known = ", ".join(sorted(_BY_NAME))
        raise ConfigError(f"{source}: unknown key {name!r} (known keys: {known})")
    try:
        into[name] = setting.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: key {name!r}: {exc}") from None


def _read_file(path: Path) -> Mapping[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting names to values")
    return data


def load_settings(
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Resolves settings from defaults, a YAML file, ``TASKER_*`` variables and flag overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    file_name = config_file or env.get("TASKER_CONFIG") or ""
    if file_name:
        path = Path(file_name)
        for key, raw in _read_file(path).items():
            _apply(str(path), str(key), raw, values)
    for setting in SETTINGS:
        if setting.env in env:
            _apply(f"environment variable {setting.env}", setting.name, env[setting.env], values)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            _apply(f"flag --{key.replace('_', '-')}", key, raw, values)
    if not values["server_id"]:
        values["server_id"] = _default_server_id()
    if bool(values.get("tls_cert_file")) != bool(values.get("tls_key_file")):
        raise ConfigError("tls_cert_file and tls_key_file must be set together")
    if values.get("tls_client_ca_file") and not values.get("tls_cert_file"):
        raise ConfigError("tls_client_ca_file needs TLS: set tls_cert_file and tls_key_file")
    if values.get("auth_file") or values.get("auth_tokens_file"):
        # Fail at start, naming the file, not per call.
        read_principals(values["auth_file"], values["auth_tokens_file"])
    return Settings(**values)


def read_tokens(path: str) -> list[str]:
    """The bearer tokens in ``path``: one per line; blank lines and ``#`` comments ignored."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"auth_tokens_file {path}: cannot be read ({exc.strerror})") from None
    tokens = [t.strip() for t in lines if t.strip() and not t.strip().startswith("#")]
    if not tokens:
        raise ConfigError(f"auth_tokens_file {path}: holds no token")
    for token in tokens:
        problem = token_problem(token)
        if problem:
            raise ConfigError(f"auth_tokens_file {path}: {problem}")
    return tokens


def read_auth_file(path: str) -> list[Principal]:
    """The principals of ``auth_file`` (YAML or JSON; see ``domain/access.py``)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"auth_file {path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"auth_file {path}: invalid YAML: {exc}") from None
    try:
        return parse_auth_file(data)
    except AuthFileError as exc:
        raise ConfigError(f"auth_file {path}: {exc}") from None


def read_principals(auth_file: str, tokens_file: str) -> list[Principal]:
    """The whole auth configuration: ``auth_file``'s principals, then one admin on every
    namespace per token of ``auth_tokens_file`` (either file may be empty)."""
    principals = read_auth_file(auth_file) if auth_file else []
    if tokens_file:
        principals += legacy_principals(read_tokens(tokens_file))
    try:
        check_unique(principals)
    except AuthFileError as exc:
        raise ConfigError(f"auth_file and auth_tokens_file together: {exc}") from None
    return principals


def render_markdown() -> str:
    """The configuration table for the README."""
    rows = ["| setting | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = "(generated)" if s.name == "server_id" else repr(s.default)
        rows.append(f"| `{s.name}` | `{s.env}` | `{default}` | {s.doc} |")
    return "\n".join(rows)
