"""The namespace lookups of authorization (task id, lease id, template YAML) on both backends."""

from __future__ import annotations

import grpc

from tasker import Client
from tasker.testing import WorkflowBuilder
from tasker.v1 import admin_service_pb2 as apb
from tasker.v1 import task_service_pb2 as tpb
from tasker.v1 import template_service_pb2 as tmpb
from tasker.v1 import worker_service_pb2 as wpb
from tasker_server.api.access_rules import NamespaceResolver, Source
from tests.e2e.workers.raw import RawWorker
from tests.support.server import RunningServer

NS = "lookups"


async def test_task_lease_and_template_namespaces_are_found(
    server: RunningServer, client: Client
) -> None:
    yaml_text = WorkflowBuilder("one", NS).step("only", "h").build()
    await client.register_template(yaml_text)
    task = await client.create_task(NS, "one", {})
    resolver = NamespaceResolver(server.app.db)
    assert await resolver.namespaces(Source.TASK, tpb.GetTaskRequest(task_id=task.task_id)) == (NS,)
    for unknown in ("987654321", "not-a-number", "9" * 30):
        assert await resolver.namespaces(Source.TASK, tpb.GetTaskRequest(task_id=unknown)) == ()
    template = tmpb.RegisterTemplateRequest(yaml=yaml_text)
    assert await resolver.namespaces(Source.TEMPLATE, template) == (NS,)
    bad = tmpb.RegisterTemplateRequest(yaml="name: [")
    assert await resolver.namespaces(Source.TEMPLATE, bad) == ()
    assert await resolver.namespaces(Source.FILTER, apb.ListWorkersRequest()) == ("*",)

    async with grpc.aio.insecure_channel(server.address) as channel:
        worker = RawWorker(channel)
        await worker.connect("lookups-worker", [NS], ["h"])
        try:
            lease_id = (await worker.next("assignment")).assignment.lease_id
            heartbeat = wpb.HeartbeatRequest(lease_ids=[lease_id, "no-such-lease"])
            assert await resolver.namespaces(Source.LEASES, heartbeat) == (NS,)
            report = wpb.ReportStepResultRequest(success=wpb.StepSuccess(lease_id=lease_id))
            assert await resolver.namespaces(Source.LEASES, report) == (NS,)
            assert await resolver.namespaces(Source.LEASES, wpb.ReportStepResultRequest()) == ()
        finally:
            await worker.close()
