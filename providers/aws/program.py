"""The AWS Pulumi program: what `pulumi up` (and a plan, under mocks) declares for one `provider: aws` target.

Per model on the target: an IAM role + instance profile (the instance may read the Hugging Face token from SSM
Parameter Store, nothing else), a security group open only on the serving port, a launch template (GPU Deep
Learning AMI, user data that starts the engine container), an auto scaling group and a CloudWatch alarm that pages
when the group has had no instance in service for `monitoring.down_for`. Per email receiver that alerts of kind
`down` are routed to: an SNS topic the alarms notify, with an email subscription. Per budget: an AWS Budget with
one notification per `alert_at` threshold.

With `gateway.store`, every instance's gateway meters to one PostgreSQL database, so budgets and rate limits hold
across all instances of all the target's models. Its DSN is written once to an SSM SecureString parameter
(`store_parameter`), from the variable `store.env` names (or the file `store.file` names) at apply, or built from
the endpoint of an RDS instance the program creates (`store.rds`, reachable on 5432 from the models' security
groups only). Each instance reads the parameter at boot, as it reads the HF token, and hands the DSN to the gateway
container in the variable `build.store_dsn_env` names: the DSN is a Pulumi secret throughout, never in user data,
a plan or a tag.

Every Pulumi logical name starts with the address of the llmctl object it belongs to and a slash
(`model.qwen-7b/asg`, `budget.team-monthly/budget`, `monitoring.prod/team-mail-topic`, `target.gpu-cloud/provider`),
so plans and state can map each cloud resource back to the line of llmops.yaml that caused it.
"""
from __future__ import annotations

import base64
import json
import math
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pulumi
import pulumi_aws as aws
from pulumi.output import UNKNOWN

from llmctl.config.schema import (
    AwsTarget,
    Budget,
    GatewayStore,
    Model,
    Monitoring,
    RdsStore,
    Receiver,
    ReplicaRange,
    duration_seconds,
)
from llmctl.desired import Desired
from llmctl.gateway import build
from llmctl.resolve import Resolved

if TYPE_CHECKING:
    from llmctl.cost.catalog import Catalog
from providers.pulumi_support.images import ENGINE_IMAGES, GATEWAY_IMAGE

AMI_CALL = "aws:ec2/getAmi:getAmi"
SUBNETS_CALL = "aws:ec2/getSubnets:getSubnets"
INSTANCES_CALL = "aws:ec2/getInstances:getInstances"
AMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)*"
AMI_OWNERS = ["amazon"]

SERVING_PORT = 8000  # the gateway's, in front of the engine
ENGINE_PORT = 8001  # the engine's, on the instance's loopback only
# No CIDRs are declared in llmops.yaml (the aws target has no field for them yet), so the serving port is open to
# the private 10.0.0.0/8 range only: reachable from inside a VPC / peered network, never from the internet.
DEFAULT_INGRESS_CIDRS = ["10.0.0.0/8"]
ROOT_VOLUME_GIB = 200  # container image + weights cache; the AMI's own root volume is too small for 7B+ models
ROOT_DEVICE = "/dev/sda1"  # Ubuntu AMIs

VLLM_IMAGE = ENGINE_IMAGES["vllm"]
TGI_IMAGE = ENGINE_IMAGES["tgi"]
TGI_PORT = 80  # TGI listens on 80 inside its container

# AWS Budgets has no weekly time unit: a weekly budget becomes a daily one of a seventh of the limit.
TIME_UNITS = {"day": "DAILY", "week": "DAILY", "month": "MONTHLY"}
PERIOD_DAYS = {"day": 1, "week": 7, "month": 1}

# The model-down alarm: the group's in-service instances, which the group publishes once a minute once collected.
DOWN_METRIC = "GroupInServiceInstances"
ALARM_PERIOD_S = 60  # the group metrics' granularity, and CloudWatch's shortest standard period
# At periods under an hour, CloudWatch evaluates an alarm over at most a day.
MAX_ALARM_WINDOW_S = 86_400

# The store's RDS instance (gateway.store.rds): PostgreSQL's port, and the database and user the DSN names.
STORE_PORT = 5432
STORE_ENGINE_VERSION = "16"  # a major version: AWS picks its minor, and applies minor upgrades in the window
STORE_DATABASE = STORE_USER = "llmctl"
# What RDS refuses in a master password (besides length): said at apply with the variable's name, not by AWS.
RDS_PASSWORD_FORBIDDEN = frozenset('/"@ ')

EC2_ASSUME_ROLE = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
})


def hf_token_parameter(project: str, environment: str) -> str:
    """The SSM parameter (SecureString) the instances read the Hugging Face token from."""
    return f"/llmctl/{project}/{environment}/hf-token"


def store_parameter(project: str, environment: str, target: str) -> str:
    """The SSM parameter (SecureString) the program writes the store's DSN to and the target's instances read.
    Per target, not per environment like the HF token: each aws target's stack writes its own, so two targets in
    one region never fight over one parameter."""
    return f"/llmctl/{project}/{environment}/store/{target}"


def program(resolved: Resolved, target: str) -> Callable[[], None]:
    """The Pulumi program for `target`: a zero-argument function that registers its resources when run."""
    desired = resolved.desired
    spec = desired.targets.get(target)
    if not isinstance(spec, AwsTarget):
        raise ValueError(f"target '{target}' is not an aws target")

    def run() -> None:
        provider = aws.Provider(f"target.{target}/provider", region=spec.region)
        opts = pulumi.ResourceOptions(provider=provider)
        models = desired.models_on(target)
        if models:
            ami = aws.ec2.get_ami(
                most_recent=True, owners=AMI_OWNERS,
                filters=[aws.ec2.GetAmiFilterArgs(name="name", values=[AMI_NAME])],
                opts=pulumi.InvokeOptions(provider=provider))
            subnets = aws.ec2.get_subnets(
                filters=[aws.ec2.GetSubnetsFilterArgs(name="default-for-az", values=["true"])],
                opts=pulumi.InvokeOptions(provider=provider))
            topics = _down_topics(desired, opts)
            store = _store(desired, target, opts)
            for model in models:
                group = _model(resolved, target, spec, model, ami.id, list(subnets.ids or []), store, opts)
                _down_alarm(desired, target, spec, model, group, topics, opts)
        for budget in desired.budgets.values():
            _budget(desired, budget, opts)

    return run


# --- models ----------------------------------------------------------------------------------------------------


def instance_type(model: Model, target: AwsTarget, catalog: Catalog) -> str:
    if model.instance_type:
        return model.instance_type
    if model.gpu is None:
        raise ValueError(f"model '{model.name}' on an aws target needs `gpu` or `instance_type`")
    return catalog.for_gpu("aws", target.region, model.gpu.type, model.gpu.count, spot=False).instance_type


def replica_bounds(model: Model) -> tuple[int, int]:
    if isinstance(model.replicas, ReplicaRange):
        return model.replicas.min, model.replicas.max
    return model.replicas, model.replicas


def engine_command(model: Model, sha: str) -> tuple[str, list[str], int]:
    """(image, container arguments, container port) of the engine serving `model`."""
    source = model.parsed_source
    if source.scheme != "hf":
        raise ValueError(f"model '{model.name}': aws targets serve hf:// sources, not {source.scheme}://")
    extra: list[str] = []
    for key, value in model.engine_args.items():
        flag = "--" + key.replace("_", "-")
        extra += [flag] if value is True else [] if value is False else [flag, str(value)]
    if model.engine == "vllm":
        args = ["--model", source.location, "--revision", sha, "--served-model-name", model.name,
                "--host", "0.0.0.0", "--port", str(SERVING_PORT)]
        if model.context_length:
            args += ["--max-model-len", str(model.context_length)]
        return VLLM_IMAGE, args + extra, SERVING_PORT
    if model.engine == "tgi":
        args = ["--model-id", source.location, "--revision", sha, "--hostname", "0.0.0.0", "--port", str(TGI_PORT)]
        if model.context_length:
            args += ["--max-total-tokens", str(model.context_length)]
        return TGI_IMAGE, args + extra, TGI_PORT
    raise ValueError(f"model '{model.name}': engine '{model.engine}' does not run on aws (use vllm or tgi)")


def key_parameter(project: str, environment: str, variable: str) -> str:
    """The SSM parameter (SecureString) an instance's gateway reads a client key from."""
    return f"/llmctl/{project}/{environment}/keys/{variable}"


def user_data(resolved: Resolved, target: AwsTarget, model: Model, store_dsn: str | None = None) -> str:
    """The boot script: start the engine on the instance's loopback and the gateway in front of it on the serving
    port. Secrets (the HF token, the gateway's keys, the store's DSN from the parameter `store_dsn` names) are read
    from SSM on the instance and never appear here."""
    desired = resolved.desired
    image, args, port = engine_command(model, resolved.revision(model))
    docker = ["docker", "run", "-d", "--restart", "unless-stopped", "--name", f"llmctl-{model.name}",
              "--gpus", "all", "--ipc=host", "-p", f"127.0.0.1:{ENGINE_PORT}:{port}", "-e", "HF_TOKEN",
              "-v", "/opt/llmctl/hf-cache:/root/.cache/huggingface"]
    if model.engine == "tgi":
        docker += ["-v", "/opt/llmctl/hf-cache:/data"]
    upstream = build.Upstream(urls=[f"http://127.0.0.1:{ENGINE_PORT}/v1"], served_name=model.name)
    spec = build.build_spec(resolved, {model.name: upstream}, Path("/var/lib/llmctl"), keys_from_env=True,
                            hosted=False, dsn_from_env=True)
    secrets = {"HF_TOKEN": hf_token_parameter(desired.project, desired.environment)}
    secrets |= {key.env: key_parameter(desired.project, desired.environment, key.env) for key in spec.keys if key.env}
    if spec.store is not None and spec.store.dsn_env and store_dsn:
        secrets[spec.store.dsn_env] = store_dsn
    gateway = ["docker", "run", "-d", "--restart", "unless-stopped", "--name", "llmctl-gateway", "--network", "host",
               *[item for variable in secrets if variable != "HF_TOKEN" for item in ("-e", variable)],
               "-v", "/opt/llmctl/gateway:/var/lib/llmctl", "-v", "/opt/llmctl/gateway/spec.json:/etc/llmctl/spec.json:ro",
               GATEWAY_IMAGE, "python", "-m", "llmctl.gateway", "--spec", "/etc/llmctl/spec.json",
               "--host", "0.0.0.0", "--port", str(SERVING_PORT)]
    lines = [
        "#!/bin/bash",
        "# written by llmctl: starts the model server and the gateway; secrets are read from SSM, not stored here",
        "set -euo pipefail",
        "mkdir -p /opt/llmctl/hf-cache /opt/llmctl/gateway",
        *[f"{variable}=\"$(aws ssm get-parameter --region {shlex.quote(target.region)} --name {shlex.quote(name)} "
          "--with-decryption --query Parameter.Value --output text 2>/dev/null || true)\"" for variable, name in
          secrets.items()],
        f"export {' '.join(secrets)}",
        "cat > /opt/llmctl/gateway/spec.json <<'LLMCTL_SPEC'",
        spec.model_dump_json(indent=1),
        "LLMCTL_SPEC",
        shlex.join([*docker, image, *args]),
        shlex.join(gateway),
        "",
    ]
    return "\n".join(lines)


def _tags(desired: Desired, **extra: str) -> dict[str, str]:
    return {"llmctl:project": desired.project, "llmctl:environment": desired.environment, **extra}


def _model(resolved: Resolved, target_name: str, target: AwsTarget, model: Model, ami_id: str,
           subnet_ids: list[str], store: _Store | None, opts: pulumi.ResourceOptions) -> aws.autoscaling.Group:
    desired = resolved.desired
    address = f"model.{model.name}"
    # IDs, not names/ARNs: under mocks (plans) only IDs are known; for IAM roles and instance profiles the ID is
    # the name
    tags = _tags(desired, **{"llmctl:model": model.name})
    prefix = f"llmctl-{desired.project}-{desired.environment}-{model.name}"

    role = aws.iam.Role(f"{address}/role", assume_role_policy=EC2_ASSUME_ROLE, tags=tags, opts=opts)
    parameters = [hf_token_parameter(desired.project, desired.environment),
                  key_parameter(desired.project, desired.environment, "*")]
    store_dsn = store_parameter(desired.project, desired.environment, target_name) if store else None
    if store_dsn:
        parameters.append(store_dsn)
    aws.iam.RolePolicy(f"{address}/role-policy", role=role.id, opts=opts, policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["ssm:GetParameter"],
                       "Resource": [f"arn:aws:ssm:{target.region}:*:parameter{name}" for name in parameters]}],
    }))
    profile = aws.iam.InstanceProfile(f"{address}/profile", role=role.id, tags=tags, opts=opts)

    sg = aws.ec2.SecurityGroup(
        f"{address}/sg",
        description=f"llmctl {model.name}: serving port {SERVING_PORT} only",
        ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=SERVING_PORT, to_port=SERVING_PORT,
                                                  cidr_blocks=DEFAULT_INGRESS_CIDRS)],
        # outbound: image registries, the Hugging Face Hub and SSM
        egress=[aws.ec2.SecurityGroupEgressArgs(protocol="-1", from_port=0, to_port=0, cidr_blocks=["0.0.0.0/0"])],
        tags=tags, opts=opts)
    # Booted instances read the DSN once: the group waits for the parameter (and, with RDS, for the rule that
    # lets this group's instances reach the database), so no instance starts a gateway without its store.
    ready: list[pulumi.Resource] = []
    if store is not None:
        ready.append(store.parameter)
        if store.security_group is not None:
            ready.append(aws.vpc.SecurityGroupIngressRule(
                f"{address}/store-ingress",
                security_group_id=store.security_group.id, referenced_security_group_id=sg.id,
                ip_protocol="tcp", from_port=STORE_PORT, to_port=STORE_PORT,
                description=f"llmctl {model.name}: its gateway's store", tags=tags, opts=opts))

    script = user_data(resolved, target, model, store_dsn)
    lt = aws.ec2.LaunchTemplate(
        f"{address}/lt",
        name_prefix=f"{prefix}-",
        image_id=ami_id,
        instance_type=instance_type(model, target, resolved.catalog),
        user_data=base64.b64encode(script.encode()).decode(),
        iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(name=profile.id),
        vpc_security_group_ids=[sg.id],
        block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
            device_name=ROOT_DEVICE,
            ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(volume_size=ROOT_VOLUME_GIB, volume_type="gp3",
                                                                delete_on_termination="true"))],
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(http_tokens="required", http_endpoint="enabled"),
        tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance",
                                                                       tags={**tags, "Name": prefix})],
        tags=tags, opts=opts)

    low, high = replica_bounds(model)
    # "$Latest": a known value in plans (the template's version number is only known after apply); instances that
    # launch after an update use the new template
    template = {"launch_template_id": lt.id, "version": "$Latest"}
    if target.spot:
        placement: dict[str, Any] = {"mixed_instances_policy": aws.autoscaling.GroupMixedInstancesPolicyArgs(
            instances_distribution=aws.autoscaling.GroupMixedInstancesPolicyInstancesDistributionArgs(
                on_demand_base_capacity=0,
                on_demand_percentage_above_base_capacity=0,  # 100% spot above the base
                spot_allocation_strategy="capacity-optimized"),
            launch_template=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateArgs(
                launch_template_specification=(
                    aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs(
                        **template))))}
    else:
        placement = {"launch_template": aws.autoscaling.GroupLaunchTemplateArgs(
            id=template["launch_template_id"], version=template["version"])}
    group = aws.autoscaling.Group(
        f"{address}/asg",
        name_prefix=f"{prefix}-",
        min_size=low, max_size=high, desired_capacity=low,
        vpc_zone_identifiers=subnet_ids,
        health_check_type="EC2",
        instance_refresh=aws.autoscaling.GroupInstanceRefreshArgs(strategy="Rolling"),
        # Groups publish no metrics until asked; the model-down alarm reads this one
        enabled_metrics=[DOWN_METRIC], metrics_granularity="1Minute",
        tags=[aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=True) for k, v in tags.items()],
        **placement, opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=ready)))
    # The group launches instances on its own, so they are read back: as of this `pulumi up` (instances still
    # booting show at the next apply or refresh). llmctl records these outputs in its state.
    running = aws.ec2.get_instances_output(
        instance_tags={"aws:autoscaling:groupName": group.name}, instance_state_names=["running"], opts=pulumi.InvokeOptions(provider=opts.provider))
    pulumi.export(f"model.{model.name}.instances", running.ids)
    pulumi.export(f"model.{model.name}.endpoints", running.public_ips.apply(
        lambda ips: [f"http://{ip}:{SERVING_PORT}/v1" for ip in ips]))
    return group


# --- the gateway's store ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Store:
    parameter: aws.ssm.Parameter  # the DSN, which every instance reads at boot
    security_group: aws.ec2.SecurityGroup | None  # the RDS instance's, which each model's group is let into


def _store(desired: Desired, target_name: str, opts: pulumi.ResourceOptions) -> _Store | None:
    store = build.settings(desired).store
    if store is None:
        return None
    owner = f"gateway.{desired.environment}"
    tags = _tags(desired, **{"llmctl:gateway": desired.environment})
    security_group = None
    if store.rds is None:
        dsn = _configured_dsn(store, desired.config_dir)
    else:
        security_group = aws.ec2.SecurityGroup(
            f"{owner}/store-sg",
            description=f"llmctl gateway store: PostgreSQL {STORE_PORT} from the model instances only",
            # no inline rules: each model's group is let in by its own rule (`_model`), so none is open to a CIDR
            tags=tags, opts=opts)
        dsn = _rds(desired, target_name, store.rds, security_group, tags, opts)
    parameter = aws.ssm.Parameter(
        f"{owner}/store-dsn",
        name=store_parameter(desired.project, desired.environment, target_name),
        type="SecureString",
        value=pulumi.Output.secret(dsn),
        description=f"llmctl {desired.project}/{desired.environment}: the DSN of the gateway's store, read by the "
                    f"instances of target {target_name} at boot",
        tags=tags, opts=opts)
    return _Store(parameter=parameter, security_group=security_group)


def _rds(desired: Desired, target_name: str, rds: RdsStore, security_group: aws.ec2.SecurityGroup,
         tags: dict[str, str], opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """The RDS PostgreSQL instance the gateways share; its DSN, a secret."""
    password = _secret_env(rds.password_env, "gateway.store.rds.password_env", _rds_password_problem)
    identifier = _rds_identifier(desired, target_name)
    instance = aws.rds.Instance(
        f"gateway.{desired.environment}/store",
        # RDS identifiers take letters, digits and single hyphens; the unique suffix AWS adds is 26 characters.
        identifier_prefix=f"{identifier[:36].rstrip('-')}-",
        engine="postgres", engine_version=STORE_ENGINE_VERSION,
        instance_class=rds.instance_class, allocated_storage=rds.storage_gb, storage_encrypted=True,
        db_name=STORE_DATABASE, username=STORE_USER, password=password,
        publicly_accessible=False, vpc_security_group_ids=[security_group.id],
        # The ledger is spend and audit history: a destroy keeps a last snapshot (the name is fixed, so a second
        # destroy of a recreated store needs the first snapshot deleted or renamed first).
        skip_final_snapshot=False, final_snapshot_identifier=f"{identifier}-final",
        tags=tags, opts=opts)
    # sslmode=require: RDS PostgreSQL 15+ refuses unencrypted connections (rds.force_ssl defaults to 1).
    return pulumi.Output.secret(pulumi.Output.all(password, instance.address, instance.port).apply(
        lambda parts: f"postgresql://{STORE_USER}:{quote(parts[0], safe='')}@{parts[1]}:{int(parts[2])}/"
                      f"{STORE_DATABASE}?sslmode=require"))


def _rds_identifier(desired: Desired, target_name: str) -> str:
    """llmctl-PROJECT-ENV-TARGET as RDS takes it: lower-case letters, digits, single hyphens, a letter first."""
    raw = f"llmctl-{desired.project}-{desired.environment}-{target_name}".lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", raw)).strip("-")[:60].rstrip("-")


def _configured_dsn(store: GatewayStore, config_dir: Path) -> pulumi.Output[str]:
    """`store.env`'s or `store.file`'s DSN, read on this machine at apply, as a secret."""
    if store.env is not None:
        return _secret_env(store.env, "gateway.store.env")
    path = config_dir / (store.file or "")
    try:
        value = path.read_text().strip()
    except OSError as exc:
        if pulumi.runtime.is_dry_run():
            return pulumi.Output.secret(UNKNOWN)  # see _secret_env: a plan does not need the DSN
        raise ValueError(f"gateway.store.file: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"gateway.store.file: {path} is empty")
    return pulumi.Output.secret(value)


def _secret_env(variable: str, field: str,
                problem: Callable[[str], str | None] = lambda value: None) -> pulumi.Output[str]:
    """The variable's value as a secret. A plan (a dry run) may go without it: plans run where secrets may not
    be, such as CI on pull requests, and show a secret as (sensitive value) whatever it is, so there it is unknown.
    An apply without it stops, naming the variable. `problem`: why a value cannot serve, or None."""
    value = os.environ.get(variable, "").strip()
    if value:
        wrong = problem(value)
        if wrong:
            raise ValueError(f"{field}: the value of {variable} {wrong}")
        return pulumi.Output.secret(value)
    if pulumi.runtime.is_dry_run():
        return pulumi.Output.secret(UNKNOWN)
    raise ValueError(f"{field}: environment variable {variable} is not set: set it where llmctl apply runs")


def _rds_password_problem(password: str) -> str | None:
    if 8 <= len(password) <= 128 and not RDS_PASSWORD_FORBIDDEN & set(password):
        return None
    return "is not a password RDS takes: 8 to 128 characters without '/', '\"', '@' or spaces"


# --- monitoring ------------------------------------------------------------------------------------------------


def down_receivers(monitoring: Monitoring) -> list[Receiver]:
    """The receivers `monitoring.routes` send alerts of kind `down` to, in the order they are declared."""
    routed = {route.to for route in monitoring.routes if "down" in route.alerts}
    return [receiver for receiver in monitoring.receivers if receiver.name in routed]


def alarm_periods(down_for: str) -> int:
    """How many one-minute periods must all breach before the alarm fires: `down_for` rounded up to whole minutes
    (CloudWatch has no shorter standard period), at least one."""
    seconds = duration_seconds(down_for)
    if seconds > MAX_ALARM_WINDOW_S:
        raise ValueError(f"monitoring.down_for {down_for} is longer than a CloudWatch alarm watches at one-minute "
                         "periods (1d): shorten it")
    return max(1, math.ceil(seconds / ALARM_PERIOD_S))


def _down_topics(desired: Desired, opts: pulumi.ResourceOptions) -> list[pulumi.Output[str]]:
    """The ARNs the model-down alarms notify: an SNS topic per email receiver routed `down`, subscribed by email.

    Webhook and Slack receivers get nothing: an SNS subscription would carry their URL, a secret the config holds
    only by reference, into this program's inputs and so into plans and state (the provider's check says so)."""
    topics = []
    for receiver in down_receivers(desired.monitoring):
        if receiver.email is None:
            continue
        address = f"monitoring.{desired.environment}/{receiver.name}"
        # SNS topic names allow letters, digits, '-' and '_' only; a receiver's name may also hold '.'
        prefix = f"llmctl-{desired.project}-{desired.environment}-{receiver.name}-".replace(".", "-")
        topic = aws.sns.Topic(f"{address}-topic", name_prefix=prefix,
                              tags=_tags(desired, **{"llmctl:receiver": receiver.name}), opts=opts)
        # Alertmanager reads `to` as a comma-separated list; an SNS email subscription takes one address. Each
        # recipient must confirm the subscription from AWS's email before it notifies them.
        for email in (part.strip() for part in receiver.email.to.split(",") if part.strip()):
            aws.sns.TopicSubscription(f"{address}-to-{email}", topic=topic.id, protocol="email", endpoint=email,
                                      opts=opts)
        topics.append(topic.id)  # a topic's ID is its ARN, and known in plans
    return topics


def _down_alarm(desired: Desired, target_name: str, target: AwsTarget, model: Model, group: aws.autoscaling.Group,
                topics: list[pulumi.Output[str]], opts: pulumi.ResourceOptions) -> None:
    """Pages when the model's group has had no instance in service for `monitoring.down_for`.

    Below 1, not below the group's minimum: that is the model down (the Prometheus ModelDown alert's meaning), while
    fewer replicas than the minimum still serve, and happen on purpose during a rolling instance refresh."""
    down_for = desired.monitoring.down_for
    periods = alarm_periods(down_for)
    runbook = ("`aws autoscaling describe-scaling-activities --auto-scaling-group-name GROUP` (GROUP: this alarm's "
               "AutoScalingGroupName) says why instances stopped or never launched; `llmctl plan` shows whether "
               "the group was changed outside llmctl, `llmctl apply` restores it.")
    if target.spot:
        runbook += f" If spot capacity keeps running out, set `spot: false` on target {target_name}."
    aws.cloudwatch.MetricAlarm(
        f"model.{model.name}/down-alarm",
        name=f"llmctl-{desired.project}-{desired.environment}-{model.name}-down",
        alarm_description=(
            f"model {model.name} ({desired.project}/{desired.environment}) down: {DOWN_METRIC} of its auto "
            f"scaling group below 1 for {periods} min (monitoring.down_for {down_for} in whole minutes), or the group "
            f"reported nothing. It counts instances, not the engine: the gateway's ModelDown rule "
            f"(`llmctl render --monitoring`) probes the model itself. Runbook: {runbook}"),
        namespace="AWS/AutoScaling",
        metric_name=DOWN_METRIC,
        dimensions={"AutoScalingGroupName": group.id},  # a group's ID is its name, and known in plans
        statistic="Maximum",  # any instance in service during a minute, and that minute is not down
        period=ALARM_PERIOD_S,
        evaluation_periods=periods,
        datapoints_to_alarm=periods,  # every minute of down_for, as Prometheus's `for:`
        comparison_operator="LessThanThreshold",
        threshold=1,
        # No datapoints: the group is gone or publishes nothing, so nothing shows the model is up
        treat_missing_data="breaching",
        alarm_actions=topics,
        ok_actions=topics,  # the all-clear reaches whoever was paged
        tags=_tags(desired, **{"llmctl:model": model.name}),
        opts=opts)


# --- budgets ---------------------------------------------------------------------------------------------------


def _budget(desired: Desired, budget: Budget, opts: pulumi.ResourceOptions) -> None:
    emails = [n for n in budget.notify if "@" in n]
    topics = [n for n in budget.notify if n.startswith("arn:aws:sns:")]
    limit = budget.limit_usd / PERIOD_DAYS[budget.period]
    aws.budgets.Budget(
        f"budget.{budget.name}/budget",
        name=f"llmctl-{desired.project}-{desired.environment}-{budget.name}",
        budget_type="COST",
        limit_amount=f"{limit:.2f}",
        limit_unit="USD",
        time_unit=TIME_UNITS[budget.period],
        notifications=[aws.budgets.BudgetNotificationArgs(
            comparison_operator="GREATER_THAN", notification_type="ACTUAL", threshold_type="PERCENTAGE",
            threshold=round(alert * 100, 6), subscriber_email_addresses=emails,
            subscriber_sns_topic_arns=topics) for alert in budget.alert_at],
        tags=_tags(desired, **{"llmctl:budget": budget.name}),
        opts=opts)


# --- mocks -----------------------------------------------------------------------------------------------------


def mock_calls(token: str, args: dict) -> dict:
    """Answers for data-source invokes under mocks (plans): a plausible AMI and default subnets; {} otherwise."""
    if token == AMI_CALL:
        return {"id": "ami-0mock0000000000000", "imageId": "ami-0mock0000000000000",
                "name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250101",
                "architecture": "x86_64", "rootDeviceName": ROOT_DEVICE, "ownerId": "898082745236",
                "mostRecent": True, "owners": list(args.get("owners") or AMI_OWNERS)}
    if token == INSTANCES_CALL:
        return {"id": "us-mock", "ids": [], "publicIps": [], "privateIps": [], "ipv6Addresses": []}
    if token == SUBNETS_CALL:
        return {"id": "us-mock", "ids": ["subnet-0mock000000000001", "subnet-0mock000000000002"]}
    return {}
