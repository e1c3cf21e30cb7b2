"""Who is calling: bearer tokens and client certificates matched against the auth configuration,
which is re-read when its files change (token rotation without a restart)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tasker_server.config import ConfigError, read_principals
from tasker_server.domain.access import AuthTable, Principal
from tasker_server.domain.errors import Unauthenticated

__all__ = ["CHECK_INTERVAL_SECONDS", "CredentialSource", "authenticate", "certificate_names"]

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 1.0
Signature = tuple[tuple[int, int] | None, ...]


class CredentialSource:
    """The current auth configuration (``auth_file`` plus the legacy ``auth_tokens_file``).

    ``current()`` notices a changed file (modification time or size) at most once every
    ``CHECK_INTERVAL_SECONDS``; ``reload()`` (SIGHUP) re-reads now. A new version that does not
    load is logged and the last good one stays in force.
    """

    def __init__(
        self, auth_file: str, tokens_file: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.files = (auth_file, tokens_file)
        self._clock = clock
        self._signature = self._stat()
        self._table = AuthTable(read_principals(*self.files))  # bad at start: ConfigError
        self._checked = clock()

    def _stat(self) -> Signature:
        out: list[tuple[int, int] | None] = []
        for path in self.files:
            try:
                st = os.stat(path) if path else None
            except OSError:
                st = None
            out.append((st.st_mtime_ns, st.st_size) if st else None)
        return tuple(out)

    def current(self) -> AuthTable:
        now = self._clock()
        if now - self._checked >= CHECK_INTERVAL_SECONDS:
            self._checked = now
            signature = self._stat()
            if signature != self._signature:
                self._signature = signature
                self.reload()
        return self._table

    def reload(self) -> bool:
        """Re-reads the files; False (and the last good version kept) when they do not load."""
        try:
            table = AuthTable(read_principals(*self.files))
        except ConfigError as exc:
            log.error("auth configuration not reloaded, keeping the last good version: %s", exc)
            return False
        self._table = table
        log.info("auth configuration reloaded", extra={"principals": len(table.principals)})
        return True


def certificate_names(auth_context: Mapping[str, Sequence[bytes]]) -> list[str]:
    """A verified client certificate's names: subject alternative names first, then the CN."""
    names: list[str] = []
    for key in ("x509_subject_alternative_name", "x509_common_name"):
        for raw in auth_context.get(key, ()):
            name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            if name and name not in names:
                names.append(name)
    return names


def authenticate(table: AuthTable, metadata: Any, auth_context: Mapping[str, Any]) -> Principal:
    """The principal of a call: its bearer token when it sends one, else its client certificate;
    Unauthenticated when neither names a principal."""
    values = [v for k, v in metadata or () if k == "authorization"]
    if values:
        scheme, _, token = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        principal = table.by_token(token.strip())
        if principal is None:
            raise Unauthenticated("the bearer token is not accepted by this server")
        return principal
    names = certificate_names(auth_context)
    if names:
        principal = table.by_identity(names)
        if principal is None:
            raise Unauthenticated(
                f"the client certificate ({', '.join(names)}) names no principal of this server"
            )
        return principal
    raise Unauthenticated(
        "this server requires a bearer token ('authorization: Bearer <token>') "
        "or a client certificate"
    )
