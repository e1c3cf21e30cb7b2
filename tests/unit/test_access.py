"""The access table, the auth file format and its reloading (no server)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasker_server.api.credentials import CredentialSource, authenticate
from tasker_server.config import ConfigError, load_settings
from tasker_server.domain.access import (
    ROLE_PERMISSIONS,
    AuthFileError,
    AuthTable,
    Permission,
    Principal,
    Role,
    check_permission,
    legacy_principals,
    parse_auth_file,
)
from tasker_server.domain.errors import PermissionDenied, Unauthenticated

TOKEN = "unit-token-0123456789abcdef"


def entry(**overrides: Any) -> dict[str, Any]:
    base = {"identity": "ci", "token": TOKEN, "namespaces": ["billing"], "roles": ["submitter"]}
    return base | overrides


def test_roles_nest_as_documented() -> None:
    perms = ROLE_PERMISSIONS
    assert perms[Role.READER] < perms[Role.OPERATOR] < perms[Role.ADMIN]
    assert perms[Role.ADMIN] == frozenset(Permission)
    assert perms[Role.WORKER] == {Permission.STEPS_WORK}
    # Only admins register templates, change namespace limits and reset breakers.
    for role in set(Role) - {Role.ADMIN}:
        assert not perms[role] & {
            Permission.TEMPLATES_WRITE,
            Permission.NAMESPACES_WRITE,
            Permission.BREAKERS_RESET,
        }
    assert not perms[Role.READER] & {Permission.TASKS_CREATE, Permission.TASKS_CANCEL}


def test_check_permission_names_what_is_missing() -> None:
    [ci] = parse_auth_file({"principals": [entry()]})
    check_permission(ci, Permission.TASKS_CANCEL, ["billing"])
    with pytest.raises(PermissionDenied) as info:
        check_permission(ci, Permission.TASKS_CANCEL, ["billing", "shipping"])
    assert info.value.message == (
        "identity 'ci' (roles submitter) lacks permission tasks.cancel in namespace 'shipping': "
        "it is limited to namespaces billing"
    )
    assert info.value.metadata == {
        "identity": "ci",
        "permission": "tasks.cancel",
        "namespace": "shipping",
    }
    with pytest.raises(PermissionDenied, match="in every namespace"):
        check_permission(ci, Permission.TASKS_READ, ["*"])
    with pytest.raises(PermissionDenied, match=r"lacks permission steps\.retry: no role"):
        check_permission(ci, Permission.STEPS_RETRY, [])


def test_star_covers_every_namespace() -> None:
    [admin] = legacy_principals([TOKEN])
    check_permission(admin, Permission.BREAKERS_RESET, ["*", "any"])
    assert admin.identity == "token-" + hashlib.sha256(TOKEN.encode()).hexdigest()[:12]


def test_tokens_and_hashes_find_their_principal() -> None:
    digest = hashlib.sha256(b"hashed-token-0123456789").hexdigest()
    principals = parse_auth_file(
        {
            "principals": [
                entry(),
                entry(identity="hashed", token=None, token_sha256=digest.upper()),
                entry(identity="cert.example", token=None, roles=["worker"]),
            ]
        }
    )
    table = AuthTable(principals)
    assert table.by_token(TOKEN) is principals[0]
    assert table.by_token("hashed-token-0123456789") is principals[1]
    assert table.by_token("other-token-0123456789") is None
    assert table.by_identity(["nope", "cert.example"]) is principals[2]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([entry()], "one key, principals"),
        ({"principals": []}, "non-empty list"),
        ({"principals": [entry(roles=["boss"])]}, "unknown role(s) boss"),
        ({"principals": [entry(namespaces=[])]}, "namespaces must be a non-empty list"),
        ({"principals": [entry(token="short")]}, "at least 16 characters"),
        ({"principals": [entry(token_sha256="abc")]}, "both"),
        ({"principals": [entry(token=None, token_sha256="abc")]}, "64 hex digits"),
        ({"principals": [entry(scope="x")]}, "unknown key(s) scope"),
        ({"principals": [entry(identity="")]}, "identity is required"),
        ({"principals": [entry(), entry()]}, "listed more than once"),
        ({"principals": [entry(), entry(identity="b")]}, "same token is given to b, ci"),
    ],
)
def test_invalid_auth_files_are_refused_with_the_problem(data: object, problem: str) -> None:
    data = _without_none(data)
    with pytest.raises(AuthFileError) as info:
        parse_auth_file(data)
    assert problem in str(info.value)


def _without_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_without_none(v) for v in data]
    return data


def test_a_bad_auth_file_stops_the_server_at_start(tmp_path: Path) -> None:
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump({"principals": [entry(roles=["boss"])]}))
    with pytest.raises(ConfigError, match=r"auth_file .*auth.yaml: principals\[0\] \(ci\)"):
        load_settings(environ={"TASKER_AUTH_FILE": str(path)})
    with pytest.raises(ConfigError, match="tls_client_ca_file needs TLS"):
        load_settings(environ={"TASKER_TLS_CLIENT_CA_FILE": str(path)})


def test_credentials_reload_on_change_and_keep_the_last_good_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump({"principals": [entry()]}))
    now = [0.0]
    source = CredentialSource(str(path), "", clock=lambda: now[0])
    assert source.current().by_token(TOKEN) is not None

    def rewrite(data: object) -> None:
        path.write_text(yaml.safe_dump(data))
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    rewrite({"principals": [entry(identity="renamed")]})
    now[0] = 0.5  # checked at most once a second
    assert source.current().by_token(TOKEN).identity == "ci"  # type: ignore[union-attr]
    now[0] = 1.0
    assert source.current().by_token(TOKEN).identity == "renamed"  # type: ignore[union-attr]
    with caplog.at_level(logging.ERROR):
        rewrite({"principals": "not a list"})
        now[0] = 2.0
        assert source.current().by_token(TOKEN).identity == "renamed"  # type: ignore[union-attr]
    assert "keeping the last good version" in caplog.text


def test_authenticate_prefers_the_token_then_the_certificate() -> None:
    cert = Principal("cert.example", frozenset({Role.READER}), frozenset({"*"}))
    [token] = legacy_principals([TOKEN])
    table = AuthTable([cert, token])
    bearer = (("authorization", f"Bearer {TOKEN}"),)
    names = {"x509_common_name": [b"cert.example"]}
    assert authenticate(table, bearer, names) is token
    assert authenticate(table, (), names) is cert
    with pytest.raises(Unauthenticated, match="names no principal"):
        authenticate(table, (), {"x509_common_name": [b"other"]})
    with pytest.raises(Unauthenticated, match="or a client certificate"):
        authenticate(table, (), {})
    with pytest.raises(Unauthenticated, match="'Bearer <token>'"):
        authenticate(table, (("authorization", "Basic x"),), names)


README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_authorization_table_matches_the_code() -> None:
    from tasker_server.api.access_rules import RULES

    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("| permission | RPCs | worker | submitter | reader | operator | admin |")
    roles = [Role(r.strip()) for r in lines[start].strip("|").split("|")[2:]]
    documented: dict[Permission, tuple[set[str], set[Role]]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rpcs = set(re.findall(r"`([A-Z]\w+)`", cells[1]))
        holders = {role for role, mark in zip(roles, cells[2:], strict=True) if mark}
        documented[Permission(cells[0].strip("`"))] = (rpcs, holders)
    for permission in Permission:
        rpcs, holders = documented[permission]
        assert holders == {r for r in Role if permission in ROLE_PERMISSIONS[r]}, permission
        ruled = {m.rsplit("/", 1)[1] for m, rule in RULES.items() if rule.permission == permission}
        assert rpcs == ruled, permission


def test_readme_auth_file_example_is_valid() -> None:
    text = README.read_text(encoding="utf-8")
    example = text[text.index("```yaml\nprincipals:") + len("```yaml\n") :]
    principals = parse_auth_file(yaml.safe_load(example[: example.index("```")]))
    assert [p.identity for p in principals] == ["ci-billing", "worker.billing.internal", "oncall"]


def test_a_token_in_both_files_stops_the_server_at_start(tmp_path: Path) -> None:
    auth, tokens = tmp_path / "auth.yaml", tmp_path / "tokens"
    auth.write_text(yaml.safe_dump({"principals": [entry()]}))
    tokens.write_text(f"{TOKEN}\n")
    env = {"TASKER_AUTH_FILE": str(auth), "TASKER_AUTH_TOKENS_FILE": str(tokens)}
    with pytest.raises(ConfigError, match="the same token is given to"):
        load_settings(environ=env)
