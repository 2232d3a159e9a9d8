"""The Kubernetes Pulumi program under Pulumi's mocks: what it declares, and that its manifests are valid."""
from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.gateway.metrics import ENGINE_JOB, GATEWAY_JOB
from llmctl.lock import Lock
from llmctl.monitor.dashboard import dashboard
from llmctl.monitor.rules import RuleGroup, rule_groups
from providers.kubernetes import monitoring
from providers.kubernetes.manifests import manifests, write_manifests
from providers.kubernetes.program import program
from providers.pulumi_support.capture import Captured, capture
from support import context, hub_lock

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "kubernetes" / "llmops.yaml"
FAKE_TOKEN = "hf_secret_value"


def _desired(tmp_path: Path | None = None, edit=None) -> Desired:
    if edit is None:
        return Desired.from_config(load(EXAMPLE))
    data = yaml.safe_load(EXAMPLE.read_text())
    edit(data)
    path = tmp_path / "llmops.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Desired.from_config(load(path))


def _capture(desired: Desired, lock: Lock | None = None) -> list[Captured]:
    return capture(program(context(desired, lock), "cluster"), desired.project, desired.environment)


def _by_name(captured: list[Captured]) -> dict[str, Captured]:
    return {resource.name: resource for resource in captured}


@pytest.fixture
def resources(monkeypatch: pytest.MonkeyPatch) -> dict[str, Captured]:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", FAKE_TOKEN)
    return _by_name(_capture(_desired()))


def _container(resources: dict[str, Captured]) -> dict:
    (container,) = resources["model.llama-k8s/deployment"].inputs["spec"]["template"]["spec"]["containers"]
    return container


def test_names_follow_the_owner_convention(resources):
    assert set(resources) == {
        "target.cluster/provider", "target.cluster/namespace", "target.cluster/config", "target.cluster/quota",
        "model.llama-k8s/deployment", "model.llama-k8s/service", "model.llama-k8s/hpa", "model.llama-k8s/pdb",
        # the example's gateway has a store: a PodDisruptionBudget, and no volume claim (test_gateway_store.py)
        "gateway.prod/spec", "gateway.prod/pdb", "gateway.prod/deployment", "gateway.prod/service",
        "monitoring.prod/rules", "monitoring.prod/scrape-gateway", "monitoring.prod/scrape-llama-k8s",
        "monitoring.prod/dashboard",
    }
    kinds = {name: r.inputs.get("kind") for name, r in resources.items()}
    assert kinds["target.cluster/namespace"] == "Namespace"
    assert kinds["target.cluster/config"] == "ConfigMap"
    assert kinds["target.cluster/quota"] == "ResourceQuota"
    assert kinds["model.llama-k8s/deployment"] == "Deployment"
    assert kinds["model.llama-k8s/service"] == "Service"
    assert kinds["model.llama-k8s/hpa"] == "HorizontalPodAutoscaler"
    assert kinds["model.llama-k8s/pdb"] == "PodDisruptionBudget"
    assert kinds["monitoring.prod/rules"] == "PrometheusRule"
    assert kinds["monitoring.prod/scrape-gateway"] == kinds["monitoring.prod/scrape-llama-k8s"] == "ServiceMonitor"
    assert kinds["monitoring.prod/dashboard"] == "ConfigMap"
    assert resources["target.cluster/provider"].inputs["context"] == "prod-gpu"
    assert resources["target.cluster/namespace"].inputs["metadata"]["name"] == "llm"
    for name, resource in resources.items():
        if name.endswith("/provider") or name.endswith("/namespace"):
            continue
        assert resource.inputs["metadata"]["namespace"] == "llm", name


def test_deployment_serves_tgi_on_one_gpu(resources):
    container = _container(resources)
    assert container["image"].startswith("ghcr.io/huggingface/text-generation-inference")
    args = container["args"]
    assert args[args.index("--model-id") + 1] == "meta-llama/Llama-3.1-8B-Instruct"
    assert args[args.index("--revision") + 1] == "main"
    assert "--max-input-length" in args
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/health"
    assert probe["port"] in ("http", 8000)
    assert {"name": "model-cache", "mountPath": "/root/.cache/huggingface"} in container["volumeMounts"]
    volumes = resources["model.llama-k8s/deployment"].inputs["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model-cache", "emptyDir": {}} in volumes


def test_lock_pins_the_revision(monkeypatch):
    sha = "0123456789abcdef0123456789abcdef01234567"
    args = _container(_by_name(_capture(_desired(), hub_lock(**{"llama-k8s": sha}))))["args"]
    assert args[args.index("--revision") + 1] == sha


def test_hf_token_is_only_a_secret_reference(resources):
    env = {var["name"]: var for var in _container(resources)["env"]}
    token = env["HF_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    for resource in resources.values():
        assert FAKE_TOKEN not in json.dumps(resource.inputs)


def test_hpa_pdb_and_service(resources):
    hpa = resources["model.llama-k8s/hpa"].inputs
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["target"]["averageUtilization"] == 80
    pdb = resources["model.llama-k8s/pdb"].inputs["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb
    service = resources["model.llama-k8s/service"].inputs["spec"]
    assert service["type"] == "ClusterIP"
    assert [port["port"] for port in service["ports"]] == [8000]


def test_vllm_concurrency_autoscaling_from_one_replica(tmp_path):
    def edit(data):
        model = data["models"][0]
        model.update(engine="vllm", replicas={"min": 1, "max": 3}, autoscale={"metric": "concurrency", "target": 8},
                     engine_args={"dtype": "bfloat16", "enforce_eager": True})

    found = _by_name(_capture(_desired(tmp_path, edit)))
    container = _container(found)
    assert container["image"].startswith("vllm/vllm-openai")
    args = container["args"]
    for flag, value in [("--model", "meta-llama/Llama-3.1-8B-Instruct"), ("--max-model-len", "8192"),
                        ("--served-model-name", "llama-k8s"), ("--dtype", "bfloat16")]:
        assert args[args.index(flag) + 1] == value
    assert "--enforce-eager" in args
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    hpa = found["model.llama-k8s/hpa"].inputs["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "vllm:num_requests_running"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "8"}
    pdb = found["model.llama-k8s/pdb"].inputs["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    quota = found["target.cluster/quota"].inputs["spec"]["hard"]
    assert int(quota["requests.nvidia.com/gpu"]) == 3


def test_fixed_replicas_scale_neither_way(tmp_path):
    def edit(data):
        data["models"][0]["replicas"] = 3

    hpa = _by_name(_capture(_desired(tmp_path, edit)))["model.llama-k8s/hpa"].inputs["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 3)


def test_quota_is_max_gpus(resources):
    # 4 replicas x 1 GPU; the budget ($2500 / ($0.80 x 730 h) = 4.28) does not lower it.
    assert int(resources["target.cluster/quota"].inputs["spec"]["hard"]["requests.nvidia.com/gpu"]) == 4


def test_quota_is_capped_by_the_budget(tmp_path):
    def edit(data):
        data["budgets"][0]["limit_usd"] = 1500  # floor(1500 / (0.80 x 730)) = 2

    quota = _by_name(_capture(_desired(tmp_path, edit)))["target.cluster/quota"]
    assert int(quota.inputs["spec"]["hard"]["requests.nvidia.com/gpu"]) == 2


def test_configmap_holds_prompts_and_guardrails(resources):
    data = resources["target.cluster/config"].inputs["data"]
    prompts = json.loads(data["prompts.json"])
    assert prompts["support-answer"]["template"] == "Answer the customer question: {{ question }}"
    assert json.loads(data["guardrails.json"])["default"]["input"]["pii"] == "redact"


def test_manifests_validate_against_kubernetes_schemas(resources, tmp_path):
    captured = list(resources.values())
    texts = manifests(captured)
    assert "deployment-llama-k8s.yaml" in texts
    paths = write_manifests(captured, tmp_path / "manifests")
    assert sorted(p.name for p in paths) == sorted(texts)
    assert len(paths) == 15  # 7 for the model and the target, 4 for the gateway (with its store), 4 for monitoring
    for path in paths:
        documents = list(yaml.safe_load_all(path.read_text()))
        assert len(documents) == 1, path.name
        (obj,) = documents
        assert list(obj)[:3] == ["apiVersion", "kind", "metadata"]
        if obj["apiVersion"] != monitoring.API_VERSION:  # the operator's kinds: test_provider.py checks them
            kubernetes_validate.validate(obj, desired_version="1.30", strict=True)
    deployment = yaml.safe_load(texts["deployment-llama-k8s.yaml"])
    assert deployment["spec"]["replicas"] == 2 and isinstance(deployment["spec"]["replicas"], int)


def test_the_gateway_fronts_the_models_with_keys_from_the_clusters_secret(tmp_path, monkeypatch):
    def without_store(data):
        del data["gateway"]  # the single-writer gateway: the example's store is test_gateway_store.py's

    monkeypatch.setenv("TEAM_KEY", "never-read-at-plan-time")
    resources = _by_name(_capture(_desired(tmp_path, without_store)))
    spec = json.loads(resources["gateway.prod/spec"].inputs["data"]["spec.json"])
    route = spec["routes"]["llama-k8s"]
    assert route["upstreams"] == ["http://llama-k8s.llm.svc.cluster.local:8000/v1"]
    assert spec["db_path"] == "/var/lib/llmctl/spend.sqlite"
    deployment = resources["gateway.prod/deployment"].inputs["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"  # one writer of the ledger
    (container,) = deployment["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "llmctl-gateway-keys"}}]
    assert resources["gateway.prod/data"].inputs["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "gateway.prod/pdb" not in resources and "env" not in container
    assert "never-read-at-plan-time" not in json.dumps([r.inputs for r in resources.values()])


def test_gateway_keys_are_hashed_in_the_pod_not_at_plan(tmp_path, monkeypatch):
    def with_key(data):
        data["gateway"] = {"keys": [{"name": "team", "env": "TEAM_KEY", "requests_per_minute": 60}]}

    monkeypatch.setenv("TEAM_KEY", "never-read-at-plan-time")
    captured = _by_name(_capture(_desired(tmp_path, with_key)))
    [key] = json.loads(captured["gateway.prod/spec"].inputs["data"]["spec.json"])["keys"]
    assert key == {"id": "team", "sha256": None, "env": "TEAM_KEY", "models": None, "requests_per_minute": 60,
                   "tokens_per_minute": None, "team": None, "budgets": []}


def test_the_prometheus_rule_carries_the_generated_rules(resources):
    rule = resources["monitoring.prod/rules"].inputs
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "llmctl"  # what the ruleSelector matches
    groups = [RuleGroup.model_validate(group) for group in rule["spec"]["groups"]]
    assert groups == rule_groups(_desired())
    assert {"llmctl-budget-team-monthly", "llmctl-health", "llmctl-engines"} == {group.name for group in groups}


def test_service_monitors_scrape_the_gateway_and_the_engine_under_the_rules_jobs(resources):
    def scraped(monitor: str, service: str) -> dict:
        spec = resources[monitor].inputs["spec"]
        service_labels = resources[service].inputs["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= service_labels.items()  # it selects that Service
        (endpoint,) = spec["endpoints"]
        ports = [port["name"] for port in resources[service].inputs["spec"]["ports"]]
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
        # Relabelings run after the operator's own (which set job to the Service's name): these win.
        return {relabel["targetLabel"]: relabel["replacement"] for relabel in endpoint["relabelings"]
                if relabel["action"] == "replace" and "sourceLabels" not in relabel}

    assert scraped("monitoring.prod/scrape-gateway", "gateway.prod/service") == {"job": GATEWAY_JOB}
    assert scraped("monitoring.prod/scrape-llama-k8s", "model.llama-k8s/service") == {"job": ENGINE_JOB,
                                                                                        "model": "llama-k8s"}
    # Nor does the gateway's select the model's Service: its targets would count in `up{job="llmctl-gateway"}`.
    gateway_selector = resources["monitoring.prod/scrape-gateway"].inputs["spec"]["selector"]["matchLabels"]
    assert not gateway_selector.items() <= resources["model.llama-k8s/service"].inputs["metadata"]["labels"].items()


def test_the_dashboard_is_a_configmap_for_grafanas_sidecar(resources):
    config = resources["monitoring.prod/dashboard"].inputs
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    (key,) = config["data"]
    assert key == "support-bot-prod.json"
    assert json.loads(config["data"][key]) == dashboard(_desired())


def test_monitoring_settings_reach_the_cluster_objects(tmp_path):
    def edit(data):
        data["monitoring"] = {"dashboards": False, "prometheus": {"scrape_interval": "1m"}}

    found = _by_name(_capture(_desired(tmp_path, edit)))
    assert "monitoring.prod/dashboard" not in found
    (endpoint,) = found["monitoring.prod/scrape-llama-k8s"].inputs["spec"]["endpoints"]
    assert endpoint["interval"] == "1m"
