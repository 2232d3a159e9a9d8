"""The Alertmanager configuration llmctl renders: accepted by the real amtool, routing each kind where the config
says, secrets only in 0600 files, and bad monitoring input refused by the config loader at its line."""
from __future__ import annotations

import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from llmctl.config.errors import ConfigError
from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.monitor import alertmanager, tools
from llmctl.monitor.alertmanager import UNROUTED

# The receivers and routes of shared/llmops.day2.example.yaml, plus a Slack receiver sharing the budget alerts, a
# username for the mail login, and `guardrails` deliberately routed nowhere.
CONFIG = """\
version: 1
project: shop
environment: prod
monitoring:
  alertmanager: {run: true}
  receivers:
    - name: oncall
      webhook: {url_env: ONCALL_WEBHOOK_URL}
    - name: team-mail
      email: {to: llm-team@example.com, smarthost: smtp.example.com:587, username: alerts@example.com,
              password_env: SMTP_PASSWORD}
    - name: chat
      slack: {url_env: SLACK_URL, channel: "#llm-alerts"}
  routes:
    - {alerts: [slo_page, down], to: oncall}
    - {alerts: [slo_ticket, budget], to: team-mail}
    - {alerts: [budget, errors], to: chat}
"""
ENV = {"ONCALL_WEBHOOK_URL": "https://hooks.example.com/oncall/s3cr3t-webhook-token",
       "SMTP_PASSWORD": "s3cr3t-smtp-password",
       "SLACK_URL": "https://hooks.slack.com/services/T000/B000/s3cr3t-slack-token"}
# Where each kind must go (both severities behave alike: severity only changes the timing).
EXPECTED = {"slo_page": "oncall", "down": "oncall", "slo_ticket": "team-mail", "budget": "team-mail,chat",
            "errors": "chat", "guardrails": UNROUTED}


def desired_from(tmp_path: Path, text: str = CONFIG) -> Desired:
    path = tmp_path / "llmops.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return Desired.from_config(load(path))


@pytest.fixture
def amtool() -> Path:
    found = tools.find("amtool")
    if found is None:
        pytest.fail(f"amtool was not found on PATH or in {tools.cache_dir() / 'usr' / 'bin'}: run "
                    "scripts/install-monitoring-tools (these tests need the real amtool, they never skip)")
    return found


@pytest.fixture
def loaded(tmp_path: Path, amtool: Path) -> Path:
    """The day-2 config as the installed Alertmanager would load it, secrets written, in a file for amtool."""
    desired = desired_from(tmp_path)
    secrets_dir = tmp_path / "secrets"
    alertmanager.write_secrets(desired, secrets_dir, ENV)
    path = secrets_dir / "alertmanager.yml"
    alertmanager.write_private(path, alertmanager.runtime_config(desired, secrets_dir, alertmanager.version(amtool)))
    return path


def run_amtool(amtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(amtool), *args], capture_output=True, text=True, timeout=60)


def check_config(amtool: Path, path: Path) -> None:
    result = run_amtool(amtool, "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr + path.read_text()
    assert "SUCCESS" in result.stdout


def receivers_for(amtool: Path, path: Path, **labels: str) -> str:
    result = run_amtool(amtool, "config", "routes", "test", f"--config.file={path}",
                        *(f"{name}={value}" for name, value in labels.items()))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# --- amtool accepts it, and routes as the config says ----------------------------------------------------------


def test_the_config_the_installed_alertmanager_loads_passes_check_config(amtool: Path, loaded: Path) -> None:
    check_config(amtool, loaded)
    document = yaml.safe_load(loaded.read_text())
    assert [r["name"] for r in document["receivers"]] == [UNROUTED, "oncall", "team-mail", "chat"]


def test_slack_and_email_secrets_by_file_load_as_rendered(tmp_path: Path, amtool: Path) -> None:
    """The rendered text itself, no webhook: api_url_file and auth_password_file are fields the binary knows."""
    desired = desired_from(tmp_path, CONFIG.replace("    - {alerts: [slo_page, down], to: oncall}\n", "")
                           .replace("    - name: oncall\n      webhook: {url_env: ONCALL_WEBHOOK_URL}\n", ""))
    path = tmp_path / "alertmanager.yml"
    path.write_text(alertmanager.render(desired, tmp_path / "secrets"))
    check_config(amtool, path)
    text = path.read_text()
    assert f"api_url_file: {tmp_path}/secrets/chat.url" in text
    assert f"auth_password_file: {tmp_path}/secrets/team-mail.password" in text


@pytest.mark.parametrize("severity", ["page", "ticket"])
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_each_kind_reaches_the_receivers_its_routes_name(amtool: Path, loaded: Path, kind: str, severity: str) -> None:
    labels = dict(kind=kind, severity=severity, project="shop", environment="prod", alertname="LlmctlX", model="m")
    assert receivers_for(amtool, loaded, **labels) == EXPECTED[kind]


def test_alerts_of_another_environment_or_project_are_not_routed(amtool: Path, loaded: Path) -> None:
    assert receivers_for(amtool, loaded, kind="slo_page", severity="page", project="shop",
                         environment="staging") == UNROUTED
    assert receivers_for(amtool, loaded, kind="slo_page", severity="page", project="other",
                         environment="prod") == UNROUTED


def test_pages_and_tickets_keep_their_own_timing(tmp_path: Path) -> None:
    document = yaml.safe_load(alertmanager.render(desired_from(tmp_path), tmp_path / "secrets"))
    root = document["route"]
    assert root["group_by"] == ["alertname", "model", "slo", "budget"]
    oncall = root["routes"][0]["routes"][0]
    assert oncall["receiver"] == "oncall" and oncall["continue"] is True
    assert {tuple(child["matchers"]): (child["group_wait"], child["repeat_interval"])
            for child in oncall["routes"]} == {('severity="page"',): ("30s", "1h"),
                                               ('severity="ticket"',): ("5m", "24h")}


# --- secrets ------------------------------------------------------------------------------------------------------


def test_secrets_are_only_in_their_0600_files(tmp_path: Path) -> None:
    desired = desired_from(tmp_path)
    secrets_dir = tmp_path / "secrets"
    alertmanager.write_secrets(desired, secrets_dir, ENV)
    rendered = alertmanager.render(desired, secrets_dir)
    newest = alertmanager.runtime_config(desired, secrets_dir, alertmanager.WEBHOOK_URL_FILE)
    for variable, value in ENV.items():
        assert value not in rendered and value not in newest, variable
    files = {path.name: path for path in secrets_dir.iterdir()}
    assert sorted(files) == ["chat.url", "oncall.url", "team-mail.password"]
    for name, variable in [("oncall.url", "ONCALL_WEBHOOK_URL"), ("chat.url", "SLACK_URL"),
                           ("team-mail.password", "SMTP_PASSWORD")]:
        assert files[name].read_text() == ENV[variable]
        assert stat.S_IMODE(files[name].stat().st_mode) == 0o600
        assert str(files[name]) in rendered
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700


def test_an_alertmanager_without_webhook_url_file_gets_the_url_inline(tmp_path: Path) -> None:
    desired = desired_from(tmp_path)
    secrets_dir = tmp_path / "secrets"
    alertmanager.write_secrets(desired, secrets_dir, ENV)
    old = yaml.safe_load(alertmanager.runtime_config(desired, secrets_dir, (0, 25, 0)))
    assert old["receivers"][1]["webhook_configs"] == [{"send_resolved": True, "url": ENV["ONCALL_WEBHOOK_URL"]}]
    assert ENV["SLACK_URL"] not in str(old) and ENV["SMTP_PASSWORD"] not in str(old)  # those stay in files
    assert (alertmanager.runtime_config(desired, secrets_dir, alertmanager.WEBHOOK_URL_FILE)
            == alertmanager.render(desired, secrets_dir))


def test_an_alertmanager_too_old_for_password_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match=r"Alertmanager 0\.24\.0 .* needs 0\.25\.0 or later"):
        alertmanager.runtime_config(desired_from(tmp_path), tmp_path, (0, 24, 0))


def test_unset_variables_are_named_with_their_receiver_and_nothing_is_written(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    with pytest.raises(LlmctlError) as caught:
        alertmanager.write_secrets(desired_from(tmp_path), secrets_dir, {"SLACK_URL": ENV["SLACK_URL"],
                                                                         "SMTP_PASSWORD": "  "})
    assert str(caught.value).splitlines() == [
        "monitoring receiver 'oncall': environment variable ONCALL_WEBHOOK_URL is not set: export "
        "ONCALL_WEBHOOK_URL with the webhook's URL before apply",
        "monitoring receiver 'team-mail': environment variable SMTP_PASSWORD is not set: export SMTP_PASSWORD "
        "with the password for smtp.example.com:587 before apply",
    ]
    assert not secrets_dir.exists()


def test_a_variable_that_is_no_url_is_refused_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError) as caught:
        alertmanager.write_secrets(desired_from(tmp_path), tmp_path / "secrets",
                                   {**ENV, "SLACK_URL": "xoxb-s3cr3t-bot-token"})
    assert str(caught.value) == ("monitoring receiver 'chat': environment variable SLACK_URL does not hold an "
                                 "http(s) URL: set it to the Slack incoming-webhook URL, starting https://")


def test_secrets_of_receivers_no_longer_declared_are_deleted(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "old-pager.url").write_text("https://old.example.com/s3cr3t")
    (secrets_dir / "alertmanager.yml").write_text("kept: the config is not a receiver's secret\n")
    alertmanager.write_secrets(desired_from(tmp_path), secrets_dir, ENV)
    assert sorted(p.name for p in secrets_dir.iterdir()) == ["alertmanager.yml", "chat.url", "oncall.url",
                                                             "team-mail.password"]


# --- plan warnings --------------------------------------------------------------------------------------------


def test_plan_warns_about_kinds_no_route_names(tmp_path: Path) -> None:
    messages = [check.message for check in alertmanager.checks(desired_from(tmp_path))]
    assert messages == [f"alerts of kind guardrails, feedback go to no receiver: Alertmanager lists them under '{UNROUTED}' "
                        "but notifies nobody; name them in a monitoring.routes entry"]


def test_plan_warns_about_unreached_receivers_and_unused_passwords(tmp_path: Path) -> None:
    config = (CONFIG.replace(" username: alerts@example.com,", "")
              .replace("    - {alerts: [budget, errors], to: chat}\n", ""))
    checks = alertmanager.checks(desired_from(tmp_path, config))
    assert {check.severity for check in checks} == {"warning"}
    assert {check.address for check in checks} == {"monitoring.prod"}
    assert [check.message for check in checks] == [
        f"alerts of kind errors, guardrails, feedback go to no receiver: Alertmanager lists them under '{UNROUTED}' but "
        "notifies nobody; name them in a monitoring.routes entry",
        "receiver 'chat' is named by no route, so nothing reaches it: add a monitoring.routes entry with "
        "`to: chat`, or remove it",
        "receiver 'team-mail': Alertmanager logs in to smtp.example.com:587 only with a username, so SMTP_PASSWORD "
        "would never be used: add `username:`",
    ]


def test_no_receivers_no_warnings(tmp_path: Path) -> None:
    assert alertmanager.checks(desired_from(tmp_path, "version: 1\nproject: shop\n")) == []


# --- bad input, through the config loader ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "col", "words"), [
    pytest.param("""\
        version: 1
        project: shop
        monitoring:
          receivers:
            - name: oncall
              webhook: {url_env: ONCALL_WEBHOOK_URL}
          routes:
            - alerts: [slo_page]
              to: pager
        """, 9, 7, ["route 1 names receiver 'pager', which is not declared", "(declared: oncall)",
                    "declare it in monitoring.receivers, or route to a declared one"], id="unknown-receiver"),
    pytest.param("""\
        version: 1
        project: shop
        monitoring:
          receivers:
            - name: oncall
              webhook:
                url_env: ONCALL_WEBHOOK_URL
                url: https://hooks.example.com/s3cr3t
        """, 8, 9, ["monitoring.receivers[oncall].webhook.url: is a secret", "never goes in llmops.yaml",
                    "set it in an environment variable and write `url_env: NAME`"], id="inline-webhook-url"),
    pytest.param("""\
        version: 1
        project: shop
        monitoring:
          receivers:
            - name: team-mail
              email:
                to: llm-team@example.com
                smarthost: smtp.example.com:587
                password: hunter2
        """, 9, 9, ["monitoring.receivers[team-mail].email.password: is a secret",
                    "set it in an environment variable and write `password_env: NAME`"], id="inline-smtp-password"),
])
def test_bad_monitoring_input_is_a_config_error_at_its_line(tmp_path: Path, text: str, line: int, col: int,
                                                             words: list[str]) -> None:
    path = tmp_path / "llmops.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(path)
    [diagnostic] = caught.value.diagnostics
    assert str(diagnostic).startswith(f"{path}:{line}:{col}: "), str(diagnostic)
    for word in words:
        assert word in diagnostic.message, diagnostic.message
