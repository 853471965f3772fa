"""The data map and the processors list (P4.4), generated from every participant's
DescribeData: the rendering (JSON, Markdown) from the real contracts, then the running
mesh: gRPC, `gatemesh privacy datamap`, and the public REST routes through the edge
(the data map and the current policy version, P10.1)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
from google.protobuf import json_format

from gatemesh.auth.v1 import auth_pb2
from gatemesh.billing.v1 import billing_pb2
from gatemesh.privacy.v1 import policy_pb2, policy_pb2_grpc
from gatemesh.proxy.v1 import proxy_pb2
from services.privacy import datamap
from services.privacy.policy_clients import own_data
from services.runtime.participant import describe_data
from tests.edge.edge_support import running_edge
from tests.privacy.mesh import OPERATOR, PASSWORD, open_mesh
from tests.privacy.mesh import PrivacyProcess as Process
from tests.support import ROOT, free_port

GATEMESH = str(Path(sys.executable).parent / "gatemesh")
AT = datetime(2026, 12, 2, tzinfo=UTC)


async def cli(env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    """`gatemesh ARGS` as a process: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        GATEMESH, *args, env={**os.environ, **env}, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    return int(process.returncode or 0), out.decode(), err.decode()


def described(service: str, module) -> dict:
    answer = describe_data(service, [module.DESCRIPTOR])
    return json_format.MessageToDict(answer, preserving_proto_field_name=True, use_integers_for_enums=True)


def mesh_map() -> datamap.DataMap:
    answers = {
        "proxy": described("proxy", proxy_pb2),
        "billing": described("billing", billing_pb2),
        "auth": described("auth", auth_pb2),
        "privacy": own_data(),
    }
    return datamap.build(answers, [], AT)


def test_the_map_lists_every_declared_field_and_each_processor_P4_4() -> None:
    """P4.4: every personal field of every contract is in the map, and each processor is
    listed with exactly the fields that declare it."""
    found = mesh_map()
    paths = {f.path for f in found.fields}
    assert "auth.accounts.email" in paths
    assert "privacy.privacy_policy_notifications.account_id" in paths
    assert {f.service for f in found.fields} == {"proxy", "billing", "auth", "privacy"}
    processors = {p.name: p for p in found.processors}
    assert set(processors) == {"blockchain", "card processor"}
    for p in found.processors:
        declaring = {f.path for f in found.fields if p.name in f.processors}
        assert set(p.receives) == declaring and declaring
        assert all(path.startswith("billing.") for path in p.receives)


def test_json_and_markdown_say_the_same_P4_4() -> None:
    """P4.4: the published forms (JSON, Markdown) carry every field and processor."""
    found = mesh_map()
    document = datamap.to_json(found)
    assert len(document["fields"]) == len(found.fields)
    where = ("auth", "accounts", "email")
    email = next(f for f in document["fields"] if (f["service"], f["store"], f["field"]) == where)
    assert email["category"] == "account" and email["erasure"] in {"delete", "anonymize"}
    markdown = datamap.to_markdown(found)
    for service in ("proxy", "billing", "auth", "privacy"):
        assert f"## {service}" in markdown
    assert markdown.count("\n| ") >= len(found.fields) + 2 * 4  # a header and a rule per service
    assert "- **card processor** (payment" in markdown and "Incomplete" not in markdown
    partial = datamap.to_markdown(datamap.build({"auth": described("auth", auth_pb2)}, ["billing"], AT))
    assert "**Incomplete**: no answer from billing." in partial


async def test_running_mesh_serves_the_map_over_grpc_cli_and_rest_P4_4_P10_1(tmp_path: Path, upstreams) -> None:
    """P4.4: the privacy service generates the map from every running participant and
    serves it publicly (gRPC, REST) and to staff (`gatemesh privacy datamap`); P10.1: the
    current version is public at REST, and staff publish it with the CLI (`--as`)."""
    with ExitStack() as stack:
        pm = await open_mesh(stack, tmp_path, upstreams)
        address = pm.mesh.envs["auth"]["GATEMESH_PRIVACY_ADDR"]
        env = pm.privacy_env(address)
        instance = Process(env, address, tmp_path / "privacy-map.log").start()
        stack.callback(instance.stop)

        async with grpc.aio.insecure_channel(address) as channel:  # no credential: public
            reply = await policy_pb2_grpc.PolicyServiceStub(channel).GetDataMap(policy_pb2.GetDataMapRequest())
        assert list(reply.services) == ["proxy", "billing", "auth", "privacy"] and not reply.unavailable
        assert {p.name for p in reply.processors} == {"blockchain", "card processor"}
        assert "## billing" in reply.markdown
        own = {(f.store, f.field) for f in reply.fields if f.service == "privacy"}
        assert {("privacy_exports", "ciphertext"), ("privacy_requests", "changes")} <= own, own
        export = next(f for f in reply.fields if f.service == "privacy" and f.field == "ciphertext")
        assert export.retention_days == 7, "P8.1: exports are personal data, listed with their 7 days"

        code, out, err = await cli(env, "privacy", "datamap", "--json")
        assert code == 0, err
        document = json.loads(out)
        assert document["services"] == ["proxy", "billing", "auth", "privacy"]
        assert len(document["fields"]) == len(reply.fields)
        code, out, _ = await cli(env, "privacy", "datamap")
        assert code == 0 and out.startswith("# Gatemesh data map")

        email = f"compliance-{os.urandom(3).hex()}@example.com"
        create = auth_pb2.AdminCreateAccountRequest(email=email, password=PASSWORD, role=auth_pb2.ROLE_COMPLIANCE)
        staff = (await pm.mesh.auth.AdminCreateAccount(create, metadata=OPERATOR)).account
        now = datetime.now(UTC).isoformat()
        publish = ("privacy", "policy", "publish", "2026-12-20", "--effective", now, "--summary", "processors listed")
        code, out, err = await cli(env, *publish, "--as", email, "--password-stdin", stdin=PASSWORD + "\n")
        assert code == 0 and "published 2026-12-20" in out, err
        code, out, _ = await cli(env, "privacy", "policy", "list", "--json")
        assert code == 0 and json.loads(out)[0]["published_by"] == staff.account_id

        port = free_port()
        edge_env = {**env, "GATEMESH_EDGE_PORT": str(port)}
        url = f"http://127.0.0.1:{port}"
        with running_edge(edge_env, url, tmp_path / "edge.log", ["auth", "billing", "proxy", "privacy"]):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                policy = await client.get("/api/v1/privacy/policy")
                data_map = await client.get("/api/v1/privacy/data-map")
                staff_only = await client.get("/api/v1/admin/privacy/policy-versions")
                bad = await client.post("/api/v1/admin/privacy/policy-versions", json={"version": "x y"}, headers={
                    "authorization": f"Bearer {env['GATEMESH_ADMIN_TOKEN']}"})  # fmt: skip
        assert policy.status_code == 200 and policy.json()["current"]["version"] == "2026-12-20"
        assert data_map.status_code == 200 and len(data_map.json()["fields"]) == len(reply.fields)
        assert staff_only.status_code == 401 and "error" in staff_only.json()
        assert bad.status_code == 400 and bad.json()["error"]["param"] in {"version", "effective_at"}

        # A participant that does not answer is named, and the map says it is incomplete.
        listed = [
            {"name": "auth", "address": pm.mesh.auth_addr, "phase": 3},
            {"name": "ghost", "address": f"127.0.0.1:{free_port()}", "phase": 2},
        ]
        other = f"127.0.0.1:{free_port()}"
        ghostly = {**pm.privacy_env(other), "GATEMESH_PRIVACY_PARTICIPANTS": json.dumps(listed)}
        second = Process(ghostly, other, tmp_path / "privacy-ghost.log").start()
        stack.callback(second.stop)
        async with grpc.aio.insecure_channel(other) as channel:
            partial = await policy_pb2_grpc.PolicyServiceStub(channel).GetDataMap(policy_pb2.GetDataMapRequest())
        assert list(partial.services) == ["auth", "privacy"] and list(partial.unavailable) == ["ghost"]
        assert "**Incomplete**: no answer from ghost." in partial.markdown
