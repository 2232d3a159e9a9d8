"""The aws program with a gateway store: one SSM SecureString parameter holds the DSN every instance's gateway
reads at boot, from the operator's variable or built from an RDS instance the program creates, and the DSN (and
the database's password) is a Pulumi secret wherever it appears: in no user data, no plain input, no plan."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pulumi
import pytest
import yaml
from pulumi.runtime import mocks

from llmctl.config.load import load
from llmctl.desired import Desired
from providers.aws.program import mock_calls, program, store_parameter
from providers.pulumi_support.capture import SENSITIVE, Captured, _event_loops, capture
from support import context, hub_lock

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "aws-gpu" / "llmops.yaml"
TARGET = "gpu-cloud"
SHA = "0123456789abcdef0123456789abcdef01234567"
LOCK = hub_lock(**{"qwen-7b": SHA, "qwen-7b-canary": SHA})
PARAMETER = "/llmctl/support-bot/prod/store/gpu-cloud"
DSN = "postgresql://gw:dsn-secret-0123@db.internal:5432/llmctl"
PASSWORD = "pw:with%odd#chars-4567"  # what a DSN must percent-encode
ENDPOINT = "llmctl-support-bot-prod-gpu-cloud-x.abc123.us-east-1.rds.amazonaws.com"
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's wire marker of a secret value


def desired_with(tmp_path: Path, store: dict[str, Any], two_models: bool = True, **gateway: Any) -> Desired:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["gateway"] = {"store": store, **gateway}
    if two_models:  # two auto scaling groups: both must point at the one store
        data["models"].append({**data["models"][0], "name": "qwen-7b-canary"})
    path = tmp_path / "llmops.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Desired.from_config(load(path))


def plan(desired: Desired) -> list[Captured]:
    """The program as a plan runs it: under mocks, a dry run, secrets masked."""
    return capture(program(context(desired, LOCK), TARGET), desired.project, desired.environment, calls=mock_calls)


@dataclass(frozen=True)
class Raw:
    type: str
    name: str
    inputs: dict[str, Any]  # as the engine gets them: a secret is {SECRET_SIG: ..., "value": ...}


class _ApplyMocks(pulumi.runtime.Mocks):
    """An apply (not a dry run) under mocks, keeping the inputs unmasked: what `pulumi up` would send."""

    def __init__(self) -> None:
        self.resources: list[Raw] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Raw(args.typ, args.name, dict(args.inputs)))
        outputs = dict(args.inputs)
        if args.typ == "aws:rds/instance:Instance":  # what RDS assigns once the instance exists
            outputs |= {"address": ENDPOINT, "port": 5432, "endpoint": f"{ENDPOINT}:5432"}
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return mock_calls(args.token, dict(args.args))


def apply(desired: Desired) -> list[Raw]:
    recorder = _ApplyMocks()
    with _event_loops():
        mocks.set_mocks(recorder, project=desired.project, stack=desired.environment, preview=False)
        mocks.test(program(context(desired, LOCK), TARGET))()
    return recorder.resources


def only(resources: list[Any], name: str) -> Any:
    found = [r for r in resources if r.name == name]
    assert len(found) == 1, [r.name for r in resources]
    return found[0]


def of_type(resources: list[Any], kind: str) -> list[Any]:
    return [r for r in resources if r.type == kind]


def scripts(resources: list[Any]) -> dict[str, str]:
    """Each launch template's boot script, by resource name."""
    return {r.name: base64.b64decode(r.inputs["userData"]).decode()
            for r in of_type(resources, "aws:ec2/launchTemplate:LaunchTemplate")}


def secret(value: Any) -> Any:
    assert isinstance(value, dict) and value.get(SECRET_SIG) is not None, value
    return value["value"]


def in_the_clear(value: Any) -> str:
    """Everything in `value` that is not inside a secret, as text."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) is not None:
            return ""
        return " ".join(f"{key} {in_the_clear(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(in_the_clear(item) for item in value)
    return str(value)


# --- store.env -------------------------------------------------------------------------------------------------


def test_one_parameter_holds_the_dsn_and_every_instance_reads_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCTL_STORE_DSN", DSN)
    resources = plan(desired_with(tmp_path, {"env": "LLMCTL_STORE_DSN"}))
    (parameter,) = of_type(resources, "aws:ssm/parameter:Parameter")
    assert parameter.name == "gateway.prod/store-dsn"
    assert parameter.inputs["name"] == PARAMETER == store_parameter("support-bot", "prod", TARGET)
    assert parameter.inputs["type"] == "SecureString" and parameter.inputs["value"] == SENSITIVE
    assert not of_type(resources, "aws:rds/instance:Instance")

    boot = scripts(resources)
    assert set(boot) == {"model.qwen-7b/lt", "model.qwen-7b-canary/lt"}
    for name, script in boot.items():
        assert (f'LLMCTL_STORE_DSN="$(aws ssm get-parameter --region us-east-1 --name {PARAMETER} '
                "--with-decryption") in script, name
        gateway_line = script.strip().splitlines()[-1]
        assert "llmctl-gateway" in gateway_line and "-e LLMCTL_STORE_DSN" in gateway_line, name
        assert "export HF_TOKEN LLMCTL_STORE_DSN" in script
        spec = json.loads(script.split("<<'LLMCTL_SPEC'\n", 1)[1].split("\nLLMCTL_SPEC", 1)[0])
        assert spec["store"] == {"kind": "postgres", "dsn_env": "LLMCTL_STORE_DSN", "dsn_file": None,
                                 "pool_size": 4, "failure": "closed"}
        assert spec["spool_dir"] == "/var/lib/llmctl/spool"  # on the instance's /opt/llmctl/gateway
    for policy in of_type(resources, "aws:iam/rolePolicy:RolePolicy"):
        allowed = json.loads(policy.inputs["policy"])["Statement"][0]["Resource"]
        assert allowed[-1] == f"arn:aws:ssm:us-east-1:*:parameter{PARAMETER}", policy.name
    for resource in resources:
        text = json.dumps(resource.inputs) + "".join(scripts([resource]).values())
        assert DSN not in text and "dsn-secret-0123" not in text, resource.name


def test_the_configs_variable_names_the_one_the_gateway_reads(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_DSN", DSN)
    script = scripts(plan(desired_with(tmp_path, {"env": "PG_DSN"}, two_models=False)))["model.qwen-7b/lt"]
    assert f'PG_DSN="$(aws ssm get-parameter --region us-east-1 --name {PARAMETER}' in script
    assert "-e PG_DSN" in script.strip().splitlines()[-1] and "LLMCTL_STORE_DSN" not in script


def test_at_apply_the_dsn_is_the_parameters_secret_value_and_nowhere_else(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCTL_STORE_DSN", DSN)
    resources = apply(desired_with(tmp_path, {"env": "LLMCTL_STORE_DSN"}))
    parameter = only(resources, "gateway.prod/store-dsn")
    assert secret(parameter.inputs["value"]) == DSN
    for resource in resources:
        assert "dsn-secret-0123" not in in_the_clear(resource.inputs), resource.name
        assert "dsn-secret-0123" not in "".join(scripts([resource]).values()), resource.name


def test_a_plan_needs_no_dsn_but_an_apply_names_the_missing_variable(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PG_DSN", raising=False)
    desired = desired_with(tmp_path, {"env": "PG_DSN"})
    # CI plans pull requests without secrets: the value is unknown, and shown masked like any secret
    assert only(plan(desired), "gateway.prod/store-dsn").inputs["value"] == SENSITIVE
    with pytest.raises(ValueError, match=r"gateway.store.env: environment variable PG_DSN is not set"):
        apply(desired)


def test_a_dsn_file_is_read_at_apply_into_the_parameter(tmp_path: Path) -> None:
    (tmp_path / "dsn.txt").write_text(DSN + "\n")
    resources = apply(desired_with(tmp_path, {"file": "dsn.txt"}))
    assert secret(only(resources, "gateway.prod/store-dsn").inputs["value"]) == DSN
    script = scripts(resources)["model.qwen-7b/lt"]
    # the instance reads the parameter: the gateway is told the variable, never the operator's file
    assert '"dsn_env": "LLMCTL_STORE_DSN"' in script and "dsn.txt" not in script


# --- store.rds -------------------------------------------------------------------------------------------------


def rds_store() -> dict[str, Any]:
    return {"rds": {"instance_class": "db.t4g.small", "storage_gb": 50, "password_env": "STORE_DB_PASSWORD"}}


def test_rds_instance_is_private_encrypted_and_snapshotted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORE_DB_PASSWORD", PASSWORD)
    resources = plan(desired_with(tmp_path, rds_store()))
    (db,) = of_type(resources, "aws:rds/instance:Instance")
    assert db.name == "gateway.prod/store"
    inputs = db.inputs
    assert (inputs["engine"], inputs["instanceClass"], inputs["allocatedStorage"]) == ("postgres", "db.t4g.small", 50)
    assert (inputs["dbName"], inputs["username"]) == ("llmctl", "llmctl")
    assert inputs["password"] == SENSITIVE
    assert inputs["publiclyAccessible"] is False and inputs["storageEncrypted"] is True
    assert inputs["skipFinalSnapshot"] is False
    assert inputs["finalSnapshotIdentifier"] == "llmctl-support-bot-prod-gpu-cloud-final"
    assert inputs["identifierPrefix"].startswith("llmctl-support-bot-prod") and len(inputs["identifierPrefix"]) <= 37
    assert inputs["vpcSecurityGroupIds"] == ["gateway.prod/store-sg-id"]

    store_sg = only(resources, "gateway.prod/store-sg").inputs
    assert "ingress" not in store_sg  # no CIDR reaches the database; only the rules below
    rules = of_type(resources, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert {rule.name: rule.inputs["referencedSecurityGroupId"] for rule in rules} == {
        "model.qwen-7b/store-ingress": "model.qwen-7b/sg-id",
        "model.qwen-7b-canary/store-ingress": "model.qwen-7b-canary/sg-id"}
    for rule in rules:
        assert rule.inputs["securityGroupId"] == "gateway.prod/store-sg-id"
        assert (rule.inputs["ipProtocol"], rule.inputs["fromPort"], rule.inputs["toPort"]) == ("tcp", 5432, 5432)
        assert "cidrIpv4" not in rule.inputs

    (parameter,) = of_type(resources, "aws:ssm/parameter:Parameter")
    assert parameter.inputs["name"] == PARAMETER and parameter.inputs["value"] == SENSITIVE
    for name, script in scripts(resources).items():
        assert f"--name {PARAMETER}" in script and "-e LLMCTL_STORE_DSN" in script, name
    for resource in resources:
        assert PASSWORD not in json.dumps(resource.inputs), resource.name


def test_rds_dsn_is_built_from_the_endpoint_as_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORE_DB_PASSWORD", PASSWORD)
    resources = apply(desired_with(tmp_path, rds_store()))
    assert secret(only(resources, "gateway.prod/store").inputs["password"]) == PASSWORD
    dsn = secret(only(resources, "gateway.prod/store-dsn").inputs["value"])
    assert dsn == f"postgresql://llmctl:{quote(PASSWORD, safe='')}@{ENDPOINT}:5432/llmctl?sslmode=require"
    for resource in resources:
        clear = in_the_clear(resource.inputs) + "".join(scripts([resource]).values())
        for text in (PASSWORD, quote(PASSWORD, safe=""), "postgresql://"):
            assert text not in clear, (resource.name, text)


def test_rds_without_its_password_variable_is_refused_at_apply(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORE_DB_PASSWORD", raising=False)
    desired = desired_with(tmp_path, rds_store())
    assert only(plan(desired), "gateway.prod/store").inputs["password"] == SENSITIVE
    with pytest.raises(ValueError, match=r"gateway.store.rds.password_env: environment variable STORE_DB_PASSWORD "
                                         r"is not set"):
        apply(desired)


@pytest.mark.parametrize("password", ["short", "has/slash-in-it", "has@at-sign", "has a space"])
def test_a_password_rds_refuses_is_named_before_aws_sees_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            password: str) -> None:
    monkeypatch.setenv("STORE_DB_PASSWORD", password)
    with pytest.raises(ValueError) as refused:
        plan(desired_with(tmp_path, rds_store(), two_models=False))
    assert "the value of STORE_DB_PASSWORD is not a password RDS takes" in str(refused.value)
    assert password not in str(refused.value)


def test_without_a_store_nothing_of_it_is_declared(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    path = tmp_path / "llmops.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    resources = plan(Desired.from_config(load(path)))
    assert not of_type(resources, "aws:ssm/parameter:Parameter") and not of_type(resources, "aws:rds/instance:Instance")
    script = scripts(resources)["model.qwen-7b/lt"]
    assert "/store/" not in script and '"store": null' in script


