"""The two programs the pulumi CLI runs, started the way it starts them and with no path tricks: the
stack program (its language host runs ``stacks/__main__.py``) and the policy pack (the engine starts
``stacks/policypack`` and talks to it over gRPC). Each runs in a fresh, isolated interpreter of the
venv (``python -I``, from an unrelated directory), so only the installed ``residency`` can be imported."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACKS = os.path.join(ROOT, "stacks")
PACK = os.path.join(STACKS, "policypack")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Pulumi's public testing API only: mocks that record each registration, and runtime.test to wait.
PROGRAM = r"""
import json, runpy, sys
import pulumi

class Recording(pulumi.runtime.Mocks):
    def __init__(self):
        self.seen = []
    def new_resource(self, args):
        self.seen.append([args.typ, args.inputs.get("region"), args.inputs.get("bucket")])
        return f"{args.name}-id", dict(args.inputs)
    def call(self, args):
        return {}, None

assert "residency" not in sys.modules
mocks = Recording()
pulumi.runtime.set_mocks(mocks, project="residency", stack=sys.argv[2])
if sys.argv[1].startswith("-m "):  # python -m residency.stacks
    run = lambda: runpy.run_module(sys.argv[1][3:], run_name="__main__", alter_sys=True) and None
else:  # the language host: the project directory's __main__.py
    run = lambda: runpy.run_path(sys.argv[1], run_name="__main__") and None
pulumi.runtime.test(run)()
print(json.dumps(mocks.seen))
"""


def _isolated(*args: str) -> list[str]:
    return [sys.executable, "-I", *args]


def test_entry_points_have_no_path_tricks():
    for path in (os.path.join(STACKS, "__main__.py"), os.path.join(PACK, "__main__.py")):
        assert "sys.path" not in open(path, encoding="utf-8").read(), path


@pytest.mark.parametrize("program,stack,aws_regions,bucket", [
    (STACKS, "production-eu", {"eu-west-1", "eu-central-1"}, "residency-eu-attachments"),
    (STACKS, "staging-au", {"ap-southeast-2", "ap-southeast-4"}, "residency-staging-au-attachments"),
    ("-m residency.stacks", "production-us", {"us-east-1", "us-west-2"}, "residency-us-attachments"),
])
def test_the_program_runs_as_the_language_host_runs_it(tmp_path, program, stack, aws_regions, bucket):
    env = {**os.environ, "RESIDENCY_REGIONS": os.path.join(ROOT, "regions.yaml")}
    p = subprocess.run(_isolated("-c", PROGRAM, program, stack), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    assert {r for t, r, _ in seen if t == "pulumi:providers:aws"} == aws_regions
    assert bucket in {b for t, _, b in seen if t == "aws:s3/bucket:Bucket"}
    assert "residency:stacks:RegionalEnvironment" in {t for t, _, _ in seen}


def test_the_policy_pack_serves_its_policies_and_enforces_them(tmp_path):
    import grpc
    from google.protobuf import empty_pb2, struct_pb2
    from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

    env = {**os.environ, "RESIDENCY_REGIONS": os.path.join(ROOT, "regions.yaml")}
    # unbuffered, as the engine runs it: the pack prints the port it serves on
    proc = subprocess.Popen(_isolated("-u", PACK), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        port = int(proc.stdout.readline().decode().strip() or 0) if ready else 0
        assert port, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no port printed in 120 s"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=60)
            assert info.name == "residency-guardrails"
            assert {p.name for p in info.policies} == {"residency-resource", "residency-stack"}

            def analyze(stack: str, props: dict, region: str):
                s, ps = struct_pb2.Struct(), struct_pb2.Struct()
                s.update(props)
                ps.update({"region": region})
                urn = f"urn:pulumi:{stack}::residency::aws:kms/key:Key::k"
                provider = analyzer_pb2.AnalyzerProviderResource(type="pulumi:providers:aws", properties=ps,
                                                                 urn=f"urn:pulumi:{stack}::residency::pulumi:providers:aws::p", name="p")
                res = stub.Analyze(analyzer_pb2.AnalyzeRequest(type="aws:kms/key:Key", properties=s, urn=urn, name="k", provider=provider),
                                   timeout=60)
                return [d.message for d in res.diagnostics]

            # a multi-region key is refused even with a value unknown during preview beside it
            found = analyze("production-eu", {"multiRegion": True, "description": UNKNOWN_STRING_VALUE}, "eu-west-1")
            assert any("multi-region" in m.lower() for m in found), found
            assert not any("can't run policy" in m for m in found), found
            assert analyze("staging-eu", {"multiRegion": False, "description": UNKNOWN_STRING_VALUE}, "eu-west-1") == []
            assert any("outside" in m or "may only touch" in m for m in analyze("production-eu", {"multiRegion": False}, "us-east-1"))
            # the anchor's stack is not a region's: nothing to check; a stack named the old way is refused
            assert analyze("production-control", {"multiRegion": False}, "us-east-1") == []
            assert any("<env>-<region>" in m for m in analyze("eu", {"multiRegion": False}, "eu-west-1"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
