"""Client certificates (``tls_client_ca_file``) name principals of the ``auth_file``.

Certificates come from the ``openssl`` CLI: a throwaway CA, client certificates it signs (one
named by its CN, one by a DNS subject alternative name, one naming nobody in the auth file), and
a self-signed client certificate from no known CA. The server's own certificate is test_tls.py's.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from tasker import (
    Client,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from tests.e2e.test_tls import (
    SDK_NODE,
    SDK_RUBY,
    TlsServerProcess,
    make_self_signed,
    run_script,
)

NS = "mtls"
TOKEN = "mtls-admin-token-0123456789"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_ca(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "ca.crt", directory / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=tasker-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def make_client_cert(
    directory: Path, ca: tuple[Path, Path], name: str, cn: str, san: str = ""
) -> tuple[Path, Path]:
    """A client certificate signed by ``ca`` with subject CN ``cn`` (and ``san`` if given)."""
    cert, key, csr = (directory / f"{name}{ext}" for ext in (".crt", ".key", ".csr"))
    ext = directory / f"{name}.ext"
    lines = ["extendedKeyUsage=clientAuth", "basicConstraints=CA:FALSE"]
    ext.write_text("\n".join([*lines, f"subjectAltName={san}"] if san else lines) + "\n")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext),
    )  # fmt: skip
    return cert, key


@dataclass
class MtlsServer:
    address: str
    root_cert: bytes
    certs: dict[str, tuple[Path, Path]]

    def credentials(self, name: str) -> grpc.ChannelCredentials:
        cert, key = self.certs[name]
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_cert,
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        )


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MtlsServer]:
    directory = tmp_path_factory.mktemp("mtls")
    server_cert, server_key = make_self_signed(directory)
    ca = make_ca(directory)
    certs = {
        "reader": make_client_cert(directory, ca, "reader", cn="reader.mtls"),
        "operator": make_client_cert(
            directory, ca, "operator", cn="some-host", san="DNS:operator.mtls"
        ),
        "stranger": make_client_cert(directory, ca, "stranger", cn="stranger.mtls"),
        "foreign": make_self_signed(directory, "foreign"),
    }
    principals = [
        {"identity": "reader.mtls", "namespaces": [NS], "roles": ["reader"]},
        {"identity": "operator.mtls", "namespaces": [NS], "roles": ["operator"]},
        {"identity": "admin", "token": TOKEN, "namespaces": ["*"], "roles": ["admin"]},
    ]
    auth = directory / "auth.yaml"
    auth.write_text(yaml.safe_dump({"principals": principals}))
    root = server_cert.read_bytes()
    server = TlsServerProcess(
        f"sqlite+aiosqlite:///{directory / 'tasker.db'}",
        root,
        tls_cert_file=str(server_cert),
        tls_key_file=str(server_key),
        tls_client_ca_file=str(ca[0]),
        auth_file=str(auth),
    )
    # The readiness probe itself needs a client certificate now.
    server.probe_channel = lambda: grpc.secure_channel(  # type: ignore[method-assign]
        server.address,
        MtlsServer(server.address, root, certs).credentials("stranger"),
    )
    server.start()
    try:
        yield MtlsServer(server.address, root, certs)
    finally:
        server.stop()


async def test_a_certificate_from_the_ca_authenticates_as_its_cn(mtls_server: MtlsServer) -> None:
    creds = mtls_server.credentials("reader")
    async with Client(mtls_server.address, tls=creds) as client:
        with pytest.raises(NotFoundError):  # authorized: the call reached the service
            await client.get_task("424242")
        with pytest.raises(PermissionDeniedError) as info:
            await client.pause_namespace(NS, reason="no")
    assert "identity 'reader.mtls' (roles reader) lacks permission namespaces.pause" in str(
        info.value
    )


async def test_a_san_names_the_principal_and_becomes_the_audit_actor(
    mtls_server: MtlsServer,
) -> None:
    async with Client(mtls_server.address, tls=mtls_server.credentials("operator")) as client:
        namespace = await client.pause_namespace(NS, actor="claimed-by-caller", reason="test")
        assert namespace.paused
        await client.resume_namespace(NS, reason="test")
        with pytest.raises(PermissionDeniedError) as info:
            await client.pause_namespace("elsewhere", reason="no")
        assert "identity 'operator.mtls'" in str(info.value)
        assert "in namespace 'elsewhere'" in str(info.value)
        async with asyncio.timeout(10):
            events = aiter(client.watch_events([NS], ["namespace.paused"]))
            paused = await anext(events)
            await events.aclose()
    assert paused.metadata["actor"] == "operator.mtls"
    assert paused.metadata["reason"] == "test"


async def test_a_bearer_token_takes_precedence_over_the_certificate(
    mtls_server: MtlsServer,
) -> None:
    creds = mtls_server.credentials("reader")
    async with Client(mtls_server.address, tls=creds, token=TOKEN) as client:
        await client.pause_namespace("elsewhere", reason="admin via token")
        await client.resume_namespace("elsewhere", reason="admin via token")


async def test_a_certificate_naming_no_principal_is_unauthenticated(
    mtls_server: MtlsServer,
) -> None:
    async with Client(mtls_server.address, tls=mtls_server.credentials("stranger")) as client:
        with pytest.raises(UnauthenticatedError) as info:
            await client.get_task("424242")
    assert "stranger.mtls" in info.value.message


@pytest.mark.parametrize("who", ["foreign", None], ids=["unknown-ca", "no-certificate"])
async def test_without_a_certificate_from_the_ca_the_handshake_fails(
    mtls_server: MtlsServer, who: str | None
) -> None:
    creds = (
        mtls_server.credentials(who)
        if who
        else grpc.ssl_channel_credentials(root_certificates=mtls_server.root_cert)
    )
    async with Client(mtls_server.address, tls=creds, token=TOKEN) as client:
        with pytest.raises(UnavailableError):
            await client.get_task("424242")


# -- the other SDKs pass client certificates through their credentials option ----------------

NODE_SCRIPT = """
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const [address, rootFile, keyFile, certFile, sdkDir] = process.argv.slice(2);
const require = createRequire(`${sdkDir}/package.json`);
const grpc = require("@grpc/grpc-js");
const sdk = require(`${sdkDir}/dist/index.js`);
const credentials = grpc.credentials.createSsl(
  readFileSync(rootFile), readFileSync(keyFile), readFileSync(certFile));
const client = await sdk.Client.connect(address, { credentials, timeoutMs: 10_000 });
const out = {};
try { await client.getTask("424242"); } catch (e) { out.get = e.constructor.name; }
try { await client.pauseNamespace("mtls", { reason: "no" }); } catch (e) {
  out.pause = e.constructor.name;
  out.message = e.message;
}
console.log(JSON.stringify(out));
client.close();
"""

RUBY_SCRIPT = """
require "json"
require "tasker"

address, root_file, key_file, cert_file = ARGV
credentials = GRPC::Core::ChannelCredentials.new(
  File.read(root_file), File.read(key_file), File.read(cert_file))
client = Tasker::Client.new(address, credentials: credentials, timeout: 10)
out = {}
begin
  client.get_task("424242")
rescue Tasker::Error => e
  out["get"] = e.class.name.split("::").last
end
begin
  client.pause_namespace("mtls", reason: "no")
rescue Tasker::Error => e
  out["pause"] = e.class.name.split("::").last
  out["message"] = e.message
end
puts JSON.generate(out)
client.close
"""


@pytest.mark.parametrize("language", ["node", "ruby"])
def test_node_and_ruby_clients_authenticate_with_a_client_certificate(
    mtls_server: MtlsServer, tmp_path: Path, language: str
) -> None:
    if shutil.which(language) is None:
        pytest.skip(f"{language} is not installed")
    if language == "node" and not (SDK_NODE / "dist" / "index.js").exists():
        pytest.fail("sdk-node is not built: run `cd sdk-node && npm run build`")
    cert, key = mtls_server.certs["reader"]
    root = tmp_path / "root.crt"
    root.write_bytes(mtls_server.root_cert)
    files = [mtls_server.address, str(root), str(key), str(cert)]
    if language == "node":
        script = tmp_path / "mtls.mjs"
        script.write_text(NODE_SCRIPT)
        args = ["node", str(script), *files, str(SDK_NODE)]
    else:
        script = tmp_path / "mtls.rb"
        script.write_text(RUBY_SCRIPT)
        args = ["ruby", f"-I{SDK_RUBY / 'lib'}", str(script), *files]
    out = json.loads(run_script(args, cwd=tmp_path).strip().splitlines()[-1])
    assert out["get"] == "NotFoundError", out
    assert out["pause"] == "PermissionDeniedError", out
    assert (
        "identity 'reader.mtls' (roles reader) lacks permission namespaces.pause"
        in (out["message"])
    )
