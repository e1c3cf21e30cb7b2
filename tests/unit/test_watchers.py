"""Watch stream admission: caps per server and per client, and who counts as one client."""

from __future__ import annotations

from typing import Any

import pytest

from tasker_server.api.watchers import Watchers, client_identity
from tasker_server.domain.errors import ResourceExhausted


class FakeContext:
    def __init__(self, peer: str, token: str = "", cert_name: bytes = b"") -> None:
        self._peer, self._token, self._cert = peer, token, cert_name

    def peer(self) -> str:
        return self._peer

    def peer_identity_key(self) -> str | None:
        return "x509_common_name" if self._cert else None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [self._cert]} if self._cert else {}

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._token}")] if self._token else []


def ctx(*args: Any, **kwargs: Any) -> Any:
    return FakeContext(*args, **kwargs)


def test_identity_prefers_certificate_then_accepted_token_then_peer_host() -> None:
    assert client_identity(ctx("ipv4:10.0.0.1:5555", cert_name=b"w1")) == "identity:w1"
    assert client_identity(ctx("ipv4:10.0.0.1:5555", token="secret")).startswith("peer:")
    by_token = client_identity(ctx("ipv4:10.0.0.1:5555", token="secret"), tokens=True)
    assert by_token.startswith("token:") and "secret" not in by_token
    assert client_identity(ctx("ipv4:10.0.0.1:5555")) == client_identity(ctx("ipv4:10.0.0.1:6"))
    assert client_identity(ctx("ipv6:[::1]:5555")) == "peer:ipv6:[::1]"


def test_slots_are_capped_per_client_and_per_server_and_released() -> None:
    watchers = Watchers(max_streams=3, max_per_client=2)
    a, b = ctx("ipv4:10.0.0.1:1"), ctx("ipv4:10.0.0.2:1")
    with watchers.slot(a), watchers.slot(a):
        with pytest.raises(ResourceExhausted) as caught, watchers.slot(a):
            pass
        assert caught.value.metadata["scope"] == "client"
        with watchers.slot(b):
            with pytest.raises(ResourceExhausted) as caught, watchers.slot(b):
                pass
            assert caught.value.metadata["scope"] == "server"
    assert watchers.open == 0
    with watchers.slot(a):
        assert watchers.open == 1
