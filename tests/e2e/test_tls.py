"""TLS end to end: one ``tasker serve`` with ``tls_cert_file``/``tls_key_file`` (SQLite), and a
real client + worker of each SDK talking to it over TLS with a bearer token.

- A throwaway self-signed certificate for 127.0.0.1/localhost (SAN ``IP:127.0.0.1``,
  ``DNS:localhost``, no CA) is generated with the ``openssl`` CLI; each SDK trusts exactly it.
- Python (in-process), Node (an ``.mjs`` script importing ``sdk-node/dist``) and Ruby (a script
  run with ``-I sdk-ruby/lib``) each register a one-step template, run a worker, create a task
  and wait for it: every one must end ``complete``.
- A plaintext client, and a TLS client trusting another certificate, get UNAVAILABLE.
- The server also requires a bearer token (``auth_tokens_file``): every SDK's token really goes on
  the wire, and a missing or wrong token gets UNAUTHENTICATED (test_auth.py covers auth alone).
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

from tasker import Client, StepContext, UnauthenticatedError, UnavailableError, Worker
from tests.support.server import REPO, ServerProcess

TOKEN = "tls-e2e-token-0123456789"
SDK_NODE = REPO / "sdk-node"
SDK_RUBY = REPO / "sdk-ruby"
SCRIPT_TIMEOUT = 45


def make_self_signed(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed (CA-less) P-256 certificate for 127.0.0.1 and localhost, valid one day."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


class TlsServerProcess(ServerProcess):
    """ServerProcess whose readiness probe speaks TLS (the base class probes in plaintext)."""

    def __init__(self, db_url: str, root_cert: bytes, **settings: str) -> None:
        super().__init__(db_url, **settings)
        self.root_cert = root_cert

    def probe_channel(self) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(root_certificates=self.root_cert)
        return grpc.secure_channel(self.address, creds)


@dataclass
class TlsServer:
    address: str
    cert_file: Path
    root_cert: bytes


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = make_self_signed(directory)
    root = cert.read_bytes()
    tokens = directory / "tokens"
    tokens.write_text(f"# accepted bearer tokens\n{TOKEN}\n")
    server = TlsServerProcess(
        f"sqlite+aiosqlite:///{directory / 'tasker.db'}",
        root,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        auth_tokens_file=str(tokens),
    )
    server.start()
    try:
        yield TlsServer(server.address, cert, root)
    finally:
        server.stop()


def template(namespace: str) -> str:
    return f"""
name: tls_echo
namespace: {namespace}
version: 1.0.0
step_templates:
  - {{name: echo, handler_class: echo}}
"""


async def test_python_client_and_worker_complete_a_task_over_tls(tls_server: TlsServer) -> None:
    ns = "tls_python"
    creds = grpc.ssl_channel_credentials(root_certificates=tls_server.root_cert)
    async with await Client.connect(
        tls_server.address, tls=creds, token=TOKEN, timeout=10
    ) as client:
        await client.register_template(template(ns))
        worker = Worker(tls_server.address, [ns], capacity=2, tls=creds, token=TOKEN)

        @worker.handler("echo")
        async def echo(ctx: StepContext) -> dict[str, object]:
            return {"echo": ctx.task.context["n"]}

        run = asyncio.create_task(worker.run())
        try:
            await worker.wait_connected(10)
            task = await client.create_task(ns, "tls_echo", {"n": 7})
            done = await client.wait_for_task(task.task_id, timeout=30)
        finally:
            await worker.shutdown(drain_timeout=2)
            await run
    assert done.state == "complete"
    assert done.step("echo").result == {"echo": 7}


NODE_SCRIPT = """
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const [address, certFile, token, sdkDir] = process.argv.slice(2);
// Resolve @grpc/grpc-js from the SDK's own node_modules: the SDK checks
// `credentials instanceof grpc.ChannelCredentials`, so it must be the same module instance.
const require = createRequire(`${sdkDir}/package.json`);
const grpc = require("@grpc/grpc-js");
const { Client, Worker } = require(`${sdkDir}/dist/index.js`);

const ns = "tls_node";
const credentials = grpc.credentials.createSsl(readFileSync(certFile));
const client = await Client.connect(address, { credentials, token, timeoutMs: 10_000 });
await client.registerTemplate(`
name: tls_echo
namespace: ${ns}
version: 1.0.0
step_templates:
  - {name: echo, handler_class: echo}
`);
const worker = new Worker(address, [ns], { credentials, token, capacity: 2 });
worker.register("echo", async (ctx) => ({ echo: ctx.task.context.n }));
const running = worker.run();
const task = await client.createTask(ns, "tls_echo", { n: 8 });
const done = await client.waitForTask(task.taskId, { timeoutMs: 30_000 });
console.log(JSON.stringify({ state: done.state, result: done.result }));
await worker.shutdown({ drainTimeoutMs: 2_000 });
await running;
client.close();
"""


def test_node_client_and_worker_complete_a_task_over_tls(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    if shutil.which("node") is None:
        pytest.fail("node is required (make install-system)")
    if not (SDK_NODE / "dist" / "index.js").exists():
        pytest.fail("sdk-node is not built: run `cd sdk-node && npm run build`")
    script = tmp_path / "tls_node.mjs"
    script.write_text(NODE_SCRIPT)
    out = run_script(
        ["node", str(script), tls_server.address, str(tls_server.cert_file), TOKEN, str(SDK_NODE)],
        cwd=tmp_path,
    )
    final = json.loads(out.strip().splitlines()[-1])
    assert final == {"state": "complete", "result": {"echo": {"echo": 8}}}, out


RUBY_SCRIPT = """
require "json"
require "tasker"

address, cert_file, token = ARGV
ns = "tls_ruby"
credentials = GRPC::Core::ChannelCredentials.new(File.read(cert_file))
client = Tasker::Client.new(address, credentials: credentials, token: token, timeout: 10)
client.register_template(<<~YAML)
  name: tls_echo
  namespace: #{ns}
  version: 1.0.0
  step_templates:
    - {name: echo, handler_class: echo}
YAML
worker = Tasker::Worker.new(address, namespaces: [ns], capacity: 2,
                            credentials: credentials, token: token)
worker.register("echo") { |ctx| { "echo" => ctx.task.context["n"] } }
worker.start
raise "worker not welcomed over TLS" unless worker.wait_connected(timeout: 10)
task = client.create_task(ns, "tls_echo", { "n" => 9 })
done = client.wait_for_task(task.task_id, timeout: 30)
puts JSON.generate({ "state" => done.state, "result" => done.step("echo").result })
worker.shutdown(drain_timeout: 2)
client.close
"""


def test_ruby_client_and_worker_complete_a_task_over_tls(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed")
    script = tmp_path / "tls_ruby.rb"
    script.write_text(RUBY_SCRIPT)
    out = run_script(
        ["ruby", f"-I{SDK_RUBY / 'lib'}", str(script), tls_server.address,
         str(tls_server.cert_file), TOKEN],
        cwd=tmp_path,
    )  # fmt: skip
    final = json.loads(out.strip().splitlines()[-1])
    assert final == {"state": "complete", "result": {"echo": 9}}, out


async def test_plaintext_client_cannot_talk_to_the_tls_server(tls_server: TlsServer) -> None:
    async with Client(tls_server.address, token=TOKEN) as client:
        with pytest.raises(UnavailableError) as info:
            await client.get_task("1")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(UnavailableError):
        await Client.connect(tls_server.address, token=TOKEN, timeout=2)


async def test_tls_client_trusting_another_certificate_is_rejected(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    other, _ = make_self_signed(tmp_path, "other")
    creds = grpc.ssl_channel_credentials(root_certificates=other.read_bytes())
    async with Client(tls_server.address, tls=creds, token=TOKEN) as client:
        with pytest.raises(UnavailableError) as info:
            await client.get_task("1")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("token", [None, "not-the-token-0123456789"], ids=["no-token", "wrong"])
async def test_tls_client_without_the_token_is_unauthenticated(
    tls_server: TlsServer, token: str | None
) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=tls_server.root_cert)
    async with Client(tls_server.address, tls=creds, token=token) as client:
        with pytest.raises(UnauthenticatedError) as info:
            await client.get_task("1")
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "bearer token" in info.value.message


def run_script(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, check=False
    )
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout
