"""Who may do what where: permissions, roles, principals and the auth file (pure Python).

A *principal* is an authenticated identity with roles and namespaces. A role is a fixed set of
permissions (``ROLE_PERMISSIONS``, the one table); a principal holds a permission in a namespace
when one of its roles grants it and the namespace is one of its own (``*`` = every namespace).
Which permission each RPC needs, and where its namespace comes from, is the API layer's table
(``api/access_rules.py``).

The auth file (``auth_file``, YAML or JSON)::

    principals:
      - identity: ci-billing          # recorded as the actor of its admin actions
        token_sha256: 9f86d0...       # or token: <the token itself>; neither: certificate only
        namespaces: [billing]         # "*" for all
        roles: [submitter, reader]

A client certificate authenticates as the principal whose ``identity`` equals one of the
certificate's subject alternative names or its subject common name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from .errors import PermissionDenied

__all__ = [
    "ALL_NAMESPACES",
    "ROLE_PERMISSIONS",
    "AuthFileError",
    "AuthTable",
    "Permission",
    "Principal",
    "Role",
    "check_permission",
    "check_unique",
    "legacy_principals",
    "parse_auth_file",
    "token_problem",
]

ALL_NAMESPACES = "*"
MIN_TOKEN_LENGTH = 16


class Permission(StrEnum):
    TASKS_CREATE = "tasks.create"
    TASKS_READ = "tasks.read"
    TASKS_CANCEL = "tasks.cancel"
    TASKS_RESOLVE = "tasks.resolve"
    STEPS_WORK = "steps.work"
    STEPS_RETRY = "steps.retry"
    STEPS_RESOLVE = "steps.resolve"
    STEPS_COMPLETE = "steps.complete"
    TEMPLATES_READ = "templates.read"
    TEMPLATES_WRITE = "templates.write"
    EVENTS_READ = "events.read"
    WORKERS_READ = "workers.read"
    NAMESPACES_READ = "namespaces.read"
    NAMESPACES_PAUSE = "namespaces.pause"
    NAMESPACES_WRITE = "namespaces.write"
    BREAKERS_READ = "breakers.read"
    BREAKERS_RESET = "breakers.reset"


class Role(StrEnum):
    WORKER = "worker"
    SUBMITTER = "submitter"
    READER = "reader"
    OPERATOR = "operator"
    ADMIN = "admin"


P = Permission
_READ = frozenset(
    {
        P.TASKS_READ,
        P.TEMPLATES_READ,
        P.EVENTS_READ,
        P.WORKERS_READ,
        P.NAMESPACES_READ,
        P.BREAKERS_READ,
    }
)

ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.WORKER: frozenset({P.STEPS_WORK}),
    Role.SUBMITTER: frozenset({P.TASKS_CREATE, P.TASKS_READ, P.TASKS_CANCEL, P.TEMPLATES_READ}),
    Role.READER: _READ,
    Role.OPERATOR: _READ
    | {
        P.TASKS_CANCEL,
        P.TASKS_RESOLVE,
        P.STEPS_RETRY,
        P.STEPS_RESOLVE,
        P.STEPS_COMPLETE,
        P.NAMESPACES_PAUSE,
    },
    Role.ADMIN: frozenset(Permission),
}


class AuthFileError(ValueError):
    """The auth file's content is unusable; the message names the entry and the problem."""


def token_problem(token: str) -> str | None:
    """Why ``token`` is not acceptable as a bearer token (None when it is)."""
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        return f"tokens must be at least {MIN_TOKEN_LENGTH} characters, without spaces"
    return None


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated identity with its roles and namespaces."""

    identity: str
    roles: frozenset[Role]
    namespaces: frozenset[str]
    token_sha256: str = ""

    @property
    def permissions(self) -> frozenset[Permission]:
        return frozenset().union(*(ROLE_PERMISSIONS[r] for r in self.roles))

    def covers(self, namespace: str) -> bool:
        """Whether ``namespace`` (``*``: every namespace) is within this principal's own."""
        return ALL_NAMESPACES in self.namespaces or (
            namespace != ALL_NAMESPACES and namespace in self.namespaces
        )

    def describe(self) -> str:
        roles = ", ".join(sorted(self.roles)) or "none"
        return f"identity {self.identity!r} (roles {roles})"


def check_permission(
    principal: Principal, permission: Permission, namespaces: Iterable[str]
) -> None:
    """Raises PermissionDenied unless ``principal`` holds ``permission`` in every one of
    ``namespaces`` (``*`` meaning every namespace; none at all: the roles alone decide)."""
    metadata = {"identity": principal.identity, "permission": str(permission)}
    if permission not in principal.permissions:
        raise PermissionDenied(
            f"{principal.describe()} lacks permission {permission}: no role of it grants it",
            metadata=metadata,
        )
    for namespace in namespaces:
        if principal.covers(namespace):
            continue
        where = (
            "in every namespace ('*')"
            if namespace == ALL_NAMESPACES
            else f"in namespace {namespace!r}"
        )
        own = ", ".join(sorted(principal.namespaces))
        raise PermissionDenied(
            f"{principal.describe()} lacks permission {permission} {where}: it is limited to "
            f"namespaces {own}",
            metadata={**metadata, "namespace": namespace},
        )


class AuthTable:
    """The principals of one auth configuration, found by bearer token or by identity."""

    def __init__(self, principals: Iterable[Principal]) -> None:
        self.principals: tuple[Principal, ...] = tuple(principals)
        self._by_identity = {p.identity: p for p in self.principals}

    def by_token(self, token: str) -> Principal | None:
        given = _sha256(token).encode()
        found = None
        # Every hash is compared, in constant time each, so timing says nothing about them.
        for principal in self.principals:
            if principal.token_sha256 and hmac.compare_digest(
                given, principal.token_sha256.encode()
            ):
                found = principal
        return found

    def by_identity(self, names: Iterable[str]) -> Principal | None:
        """The principal of the first of ``names`` (a certificate's SANs, then its CN) listed."""
        for name in names:
            if name in self._by_identity:
                return self._by_identity[name]
        return None


def legacy_principals(tokens: Iterable[str]) -> list[Principal]:
    """The principals of ``auth_tokens_file``: each token is an admin on every namespace, named
    ``token-`` + the first 12 hex digits of its sha256 (not a secret; stable across restarts)."""
    out = []
    for token in tokens:
        digest = _sha256(token)
        out.append(
            Principal(
                identity=f"token-{digest[:12]}",
                roles=frozenset({Role.ADMIN}),
                namespaces=frozenset({ALL_NAMESPACES}),
                token_sha256=digest,
            )
        )
    return out


_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"identity", "token", "token_sha256", "namespaces", "roles"}


def _strings(entry: Mapping[str, object], key: str, where: str) -> list[str]:
    raw = entry.get(key)
    if not isinstance(raw, list) or not raw or not all(isinstance(v, str) and v for v in raw):
        raise AuthFileError(f"{where}: {key} must be a non-empty list of strings")
    return [str(v) for v in raw]


def _principal(entry: object, where: str) -> Principal:
    if not isinstance(entry, dict):
        raise AuthFileError(f"{where}: expected a mapping with identity, namespaces and roles")
    unknown = sorted(set(map(str, entry)) - _KEYS)
    if unknown:
        raise AuthFileError(f"{where}: unknown key(s) {', '.join(unknown)}")
    identity = entry.get("identity")
    if not isinstance(identity, str) or not identity.strip():
        raise AuthFileError(f"{where}: identity is required")
    where = f"{where} ({identity})"
    token, digest = entry.get("token"), entry.get("token_sha256")
    if token is not None and digest is not None:
        raise AuthFileError(f"{where}: set token or token_sha256, not both")
    if token is not None:
        problem = token_problem(token) if isinstance(token, str) else "token must be a string"
        if problem:
            raise AuthFileError(f"{where}: {problem}")
        digest = _sha256(str(token))
    elif digest is not None:
        digest = str(digest).strip().lower()
        if not _HEX64.fullmatch(digest):
            raise AuthFileError(f"{where}: token_sha256 must be 64 hex digits")
    roles = _strings(entry, "roles", where)
    unknown_roles = sorted(set(roles) - {r.value for r in Role})
    if unknown_roles:
        known = ", ".join(r.value for r in Role)
        raise AuthFileError(f"{where}: unknown role(s) {', '.join(unknown_roles)} (known: {known})")
    return Principal(
        identity=identity.strip(),
        roles=frozenset(Role(r) for r in roles),
        namespaces=frozenset(_strings(entry, "namespaces", where)),
        token_sha256=str(digest or ""),
    )


def parse_auth_file(data: object) -> list[Principal]:
    """The principals of a parsed auth file (``{"principals": [...]}``); AuthFileError names the
    first problem. Identities and tokens must be unique."""
    if not isinstance(data, dict) or set(map(str, data)) != {"principals"}:
        raise AuthFileError("expected a mapping with one key, principals (a list)")
    entries = data["principals"]
    if not isinstance(entries, list) or not entries:
        raise AuthFileError("principals must be a non-empty list")
    out = [_principal(entry, f"principals[{i}]") for i, entry in enumerate(entries)]
    check_unique(out)
    return out


def check_unique(principals: Collection[Principal]) -> None:
    """AuthFileError if two principals share an identity or a token."""
    identities = [p.identity for p in principals]
    twice = sorted({i for i in identities if identities.count(i) > 1})
    if twice:
        raise AuthFileError(f"identity {twice[0]!r} is listed more than once")
    digests = [p.token_sha256 for p in principals if p.token_sha256]
    if len(digests) != len(set(digests)):
        owners = sorted(p.identity for p in principals if digests.count(p.token_sha256) > 1)
        raise AuthFileError(f"the same token is given to {', '.join(owners)}")
