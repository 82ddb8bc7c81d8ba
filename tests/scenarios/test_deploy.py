"""Deploy artefacts against the real tools and the real agent.

- Alerting rules: `promtool check rules`, `promtool test rules` (every alert fires on a pod in
  trouble and stays silent on a healthy one), runbooks linked and present.
- End to end: a real Prometheus (Debian's package) scrapes `credwatch-demo` and a second agent on
  loopback, evaluates the rules (a copy with `for:` shortened, generated here) and fires the
  storm alert for the storm pod only; every dashboard query returns data.
- Consistency: each metric name in rules and dashboards is exported by the built agent (or is
  listed in PENDING_METRICS, reported as pending); `promtool check metrics` on its output.
- Manifests: `kubectl kustomize` renders the base and the overlay, the objects validate offline
  against Kubernetes' OpenAPI schemas, the DaemonSet's flags are accepted by `credwatch run`.
- Least privilege: the agent under capsh with exactly the overlay's capabilities (and a read-only
  cgroup mount, as in the DaemonSet) becomes ready and counts a request; without any one of them
  it fails with an error.

Safety: loopback only; cgroups only under the session's credwatch-test-<pid> subtree (the demo
makes and removes its own credwatch-demo-<pid>); every process started here is ended by pid.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.parse
import warnings
from pathlib import Path

import pytest
import yaml

from kube_apiserver import KubeApiServer  # tests/fixtures, on sys.path through harness
from harness import (
    OPENMETRICS, PROMETHEUS_TEXT, REPO, Agent, Metrics, Processes, agent_binary, credserver,
    demo_binary, free_port, http_get, wait_for, wait_for_count,
)

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yaml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yaml"
PROMETHEUS_EXAMPLE = DEPLOY / "prometheus" / "prometheus-example.yml"
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))
BASE = DEPLOY / "base"
LEAST_PRIVILEGE = DEPLOY / "overlays" / "least-privilege"
HOST_NETWORK = DEPLOY / "overlays" / "host-network"
KUSTOMIZATIONS = (BASE, LEAST_PRIVILEGE, HOST_NETWORK)
RUNBOOK_PREFIX = "https://github.com/credwatch/credwatch/blob/main/"

# Metric names the rules and dashboards use before the agent exports them (the DNS and TCP work
# in progress). The consistency test reports these as pending instead of failing, and fails as
# soon as the built agent exports one of them: then delete that name here.
PENDING_METRICS: set[str] = set()
# Families the agent declares everywhere but whose series exist only on some hardware, with their
# labels: the ENA driver's counters (EC2 instances; this machine has no ENA interface).
HARDWARE_LABELS = {"credwatch_ena_allowance_exceeded_total": {"interface", "allowance"}}
# Series Prometheus makes itself, and labels the scrape adds (docs/deploy.md).
PROMETHEUS_SERIES = {"up"}
# `cluster` is an external label (one Prometheus, Thanos or Mimir for many clusters).
TARGET_LABELS = {"job", "instance", "node", "cluster"}
# What Grafana substitutes for its built-in interval variables, for the queries sent here.
GRAFANA_BUILTINS = {"__rate_interval": "30s", "__range": "5m", "__interval": "15s"}

E2E_TIMEOUT = 75
FAST_FOR = "2s"


class PendingWarning(UserWarning):
    """Shown in pytest's warnings summary: something this suite could not check yet."""


def note(message: str) -> None:
    print(message)
    warnings.warn(PendingWarning(message), stacklevel=2)


def tool(name: str, hint: str = "run scripts/setup.sh") -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed ({hint})")
    return path


def run(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


# --- what the rules and dashboards use -----------------------------------------------------------


def all_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict]:
    return [rule for rule in all_rules() if "alert" in rule]


def recording_rules() -> list[dict]:
    return [rule for rule in all_rules() if "record" in rule]


def all_panels(dashboard: dict):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries():
    """(dashboard file, panel title, PromQL expr) for every panel target."""
    for path in DASHBOARDS:
        for panel in all_panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"]


def variable_queries():
    """(dashboard file, variable name, label, series selector) for label_values() variables."""
    for path in DASHBOARDS:
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] == "query":
                match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
                assert match, f"{path.name} ${var['name']}: not label_values(selector, label)"
                yield path.name, var["name"], match.group(2), match.group(1)


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\bcredwatch_[a-z0-9_]+", expr))
    names |= {name for name in PROMETHEUS_SERIES if re.search(rf"\b{name}\s*\{{", expr)}
    return names


def used_metric_names() -> dict[str, set[str]]:
    """metric name -> where it is used."""
    used: dict[str, set[str]] = {}
    for rule in all_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"rules.yaml {rule.get('alert') or rule['record']}")
    for dash, title, expr in dashboard_queries():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"{dash} '{title}'")
    for dash, var, _, selector in variable_queries():
        for name in metric_names(selector):
            used.setdefault(name, set()).add(f"{dash} ${var}")
    return used


def family_of(sample_name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", sample_name)


def is_pending(name: str) -> bool:
    return name in PENDING_METRICS or family_of(name) in PENDING_METRICS


def exported_sample_names(exposition: str) -> set[str]:
    """Sample names an OpenMetrics exposition declares with `# TYPE` lines."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                "summary": ["", "_sum", "_count"], "info": ["_info"]}
    names = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        names |= {family + suffix for suffix in suffixes.get(kind, [""])}
    return names


# --- rules -------------------------------------------------------------------------------------


def test_promtool_check_rules():
    result = run([tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout


def test_promtool_unit_tests_cover_every_alert():
    result = run([tool("promtool"), "test", "rules", str(RULES_TEST)], cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout

    # Each alert has a case where it fires and a case where it stays silent.
    fires, silent = set(), set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - fires == set(), "alerts with no unit test where they fire"
    assert alerts - silent == set(), "alerts with no unit test where they stay silent"
    # Every recording rule is evaluated by a promql_expr_test with expected samples.
    checked = {re.match(r"[\w:]+", check["expr"]).group(0)
               for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
               for check in case.get("promql_expr_test", []) if check.get("exp_samples")}
    assert {rule["record"] for rule in recording_rules()} - checked == set(), \
        "recording rules with no unit test"


def test_unit_tests_fail_when_an_alert_is_broken(tmp_path):
    """The unit tests are not vacuous: a storm rule that also flags healthy pods fails them."""
    broken = RULES.read_text().replace("expr: credwatch_credential_refresh_storm == 1",
                                       "expr: credwatch_credential_refresh_storm >= 0")
    assert broken != RULES.read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yaml")
    result = run([tool("promtool"), "test", "rules", "rules_test.yaml"], cwd=tmp_path)
    assert result.returncode != 0
    assert "CredwatchCredentialRefreshStorm" in result.stdout + result.stderr


def test_every_alert_has_annotations_and_a_runbook():
    for rule in alert_rules():
        name, annotations = rule["alert"], rule.get("annotations", {})
        assert name.startswith("Credwatch"), f"{name}: alert names start with Credwatch"
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        url = annotations["runbook_url"]
        assert url == f"{RUNBOOK_PREFIX}docs/runbooks/{name}.md", url
        runbook = REPO / url.removeprefix(RUNBOOK_PREFIX)
        assert runbook.exists(), f"{name}: {runbook} is missing"
        text = runbook.read_text()
        assert text.startswith(f"# {name}\n"), f"{runbook}: should start with '# {name}'"
        for section in ("## Meaning", "## Confirm", "## Likely causes", "## Fix"):
            assert section in text, f"{runbook}: no '{section}' section"


def test_generated_files_are_up_to_date():
    """prometheusrule.yaml and the dashboards are generated by deploy/generate.py, never edited."""
    result = run([sys.executable, str(DEPLOY / "generate.py"), "--check"])
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load((BASE / "prometheusrule.yaml").read_text())
    assert rendered["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_plain_prometheus_example_config(tmp_path):
    """The scrape job and rule file for Prometheus without the operator. Debian's Prometheus is
    built without Kubernetes service discovery, so promtool checks a copy whose
    kubernetes_sd_configs is swapped for a static target; relabelling and rules are checked."""
    config = yaml.safe_load(PROMETHEUS_EXAMPLE.read_text())
    job = config["scrape_configs"][0]
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
    assert not {"namespace", "pod", "container"} & {
        relabel.get("target_label") for relabel in job["relabel_configs"]}, \
        "the job must not set target labels that collide with the agent's workload labels"
    result = run([tool("promtool"), "check", "config", str(PROMETHEUS_EXAMPLE)])
    if "kubernetes_sd_configs not found" in result.stdout + result.stderr:
        note("promtool here has no Kubernetes service discovery (Debian's build): checked the "
             "example with kubernetes_sd_configs replaced by a static target")
        job["static_configs"] = [{"targets": ["127.0.0.1:9500"]}]
        del job["kubernetes_sd_configs"]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        shutil.copy(RULES, tmp_path / "rules.yaml")
        result = run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout


# --- dashboards --------------------------------------------------------------------------------


def test_dashboards_are_importable_json():
    assert [path.name for path in DASHBOARDS] == ["credwatch-fleet.json", "credwatch-pod.json"]
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        variables = {var["name"]: var for var in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        # Fleets: one Prometheus (Thanos, Mimir, Amazon Managed Prometheus) for many clusters.
        assert {"cluster", "node", "namespace", "workload", "pod"} <= set(variables)
        ids = [panel["id"] for panel in all_panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in all_panels(dashboard):
            pos = panel["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, (path.name, panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel.get("description"), f"{path.name} '{panel['title']}' has no description"
            assert panel["targets"], f"{path.name} '{panel['title']}' has no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
                unknown = used - set(variables) - set(GRAFANA_BUILTINS)
                assert not unknown, f"{path.name} '{panel['title']}': undefined {unknown}"
        titles = " ".join(panel["title"] for panel in all_panels(dashboard))
        for topic in ("Credential", "Metadata", "DNS", "TCP"):
            assert topic in titles, f"{path.name}: no {topic} panels"


# --- end to end with a real Prometheus ---------------------------------------------------------


@dataclasses.dataclass
class Stack:
    prometheus_port: int
    demo_port: int
    agent: Agent
    storm_pod: str
    healthy_pod: str
    imdsv1_pod: str
    started: float

    def query(self, expr: str) -> list:
        status, body = http_get(self.prometheus_port,
                                "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{expr}: {body[:500]}"
        return answer["data"]["result"]

    def alerts(self) -> list[dict]:
        status, body = http_get(self.prometheus_port, "/api/v1/alerts")
        assert status == 200, body
        return json.loads(body)["data"]["alerts"]

    def demo_text(self, accept: str = OPENMETRICS) -> str:
        status, body = http_get(self.demo_port, "/metrics", accept)
        assert status == 200
        return body


def fast_rules(path: Path) -> None:
    """The shipped rules with every `for:` cut to seconds, so the test need not wait minutes."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FAST_FOR
    path.write_text(yaml.safe_dump(rules, sort_keys=False))


def demo_pods(port: int) -> tuple[str, str] | None:
    """(storm pod, healthy pod) of the running demo, once both have fetched credentials: the
    storm pod is the one served KIAM's 15-minute credentials."""
    try:
        status, body = http_get(port, "/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    metrics = Metrics.parse(body)
    pods = {dict(labels)["pod"] for name, labels in metrics
            if name == "credwatch_credential_fetches_total"}
    if len(pods) != 2:
        return None
    lifetime = "credwatch_credential_remaining_lifetime_seconds"
    short = {pod for pod in pods if metrics.bucket(lifetime, 900, pod=pod) > 0}
    if len(short) != 1:
        return None
    (storm,) = short
    (healthy,) = pods - short
    return storm, healthy


def run_imdsv1_client(processes, pod, server, upstream):
    report = processes.run_client("java_v1_policy.py", [
        "--host", server.host, "--port", server.port, "--requests", 2,
        "--upstream-host", upstream.host, "--upstream-port", upstream.port], pod)
    assert report["errors"] == 0, report
    # An IMDSv2 token request the server hangs up on (as a hop limit of 1 loses the answer):
    # the unanswered-request panels and CredwatchIMDSTokenUnanswered.
    token = b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n"
    report = processes.run_client("raw_client.py", [
        "--host", server.host, "--port", server.port, "--send-hex", token.hex()], pod)
    assert report["received"] == "", report
    # The DNS and TCP panels' events too: an accept, a refused connect, a REFUSED DNS answer.
    report = processes.run_client("network_mix.py", [], pod)
    assert set(report.values()) == {1}, report


@pytest.fixture(scope="module")
def stack(cgroups, tmp_path_factory):
    prometheus = tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    processes = Processes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDWATCH_")}
    server = credserver.CredentialServer("127.0.0.1", lifetime=21600,
                                         unanswered_tokens=True).start()
    upstream = credserver.ApiServer().start()
    # The Kubernetes API stand-in, so that the agent exports its watch's health
    # (credwatch_kubernetes_watch_up, CredwatchKubernetesWatchDown) as it does in a cluster.
    kube = KubeApiServer().start()
    demo = agent = prom = None
    try:
        # The storm scenario: a KIAM-like pod and a healthy one, in the demo's own cgroups.
        demo_port = free_port()
        with open(tmp / "demo.out", "wb") as out, open(tmp / "demo.err", "wb") as err:
            demo = processes.spawn([str(demo_binary()), "--listen",
                                    f"127.0.0.1:{demo_port}", "--duration", "170"],
                                   stdout=out, stderr=err, env=env)
        # A second agent on a test pod that calls IMDS without tokens (6-hour credentials).
        (tmp / "agent").mkdir()
        kubeconfig = kube.kubeconfig(tmp / "kubeconfig")
        agent = Agent(processes, tmp / "agent", cgroups.root, [server.endpoint], extra_args=(
            "--kubernetes", "on", "--kubeconfig", str(kubeconfig), "--node-name", "test-node"))
        imdsv1 = cgroups.systemd_pod()

        prom_port = free_port()
        fast_rules(tmp / "rules.yaml")
        (tmp / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yaml"],
            "scrape_configs": [{
                "job_name": "credwatch",
                "static_configs": [{"targets": [f"127.0.0.1:{demo_port}",
                                                f"127.0.0.1:{agent.port}"],
                                    "labels": {"node": "test-node"}}]}]}))
        with open(tmp / "prometheus.log", "wb") as log:
            prom = processes.spawn([prometheus, f"--config.file={tmp / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={tmp / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{prom_port}"],
                                   stdout=log, stderr=subprocess.STDOUT)

        def demo_ready():
            if demo.poll() is not None:
                raise AssertionError(f"demo exited {demo.returncode}: "
                                     f"{(tmp / 'demo.err').read_text()[-2000:]}")
            return demo_pods(demo_port)

        storm_pod, healthy_pod = wait_for(demo_ready, 40, interval=0.5, what="the demo's pods")
        started = time.monotonic()

        def scraped():
            if prom.poll() is not None:
                raise AssertionError((tmp / "prometheus.log").read_text()[-2000:])
            try:
                status, body = http_get(prom_port, "/api/v1/query?query=sum(up)")
            except OSError:
                return False
            result = json.loads(body)["data"]["result"] if status == 200 else []
            return bool(result) and float(result[0]["value"][1]) == 2

        wait_for(scraped, 30, interval=0.25, what="Prometheus scraping both agents")
        stack = Stack(prom_port, demo_port, agent, storm_pod, healthy_pod, imdsv1.pod, started)
        # IMDSv1 calls before and after Prometheus first sees the pod's counter: increase()
        # cannot count the increments that created a series.
        run_imdsv1_client(processes, imdsv1, server, upstream)
        wait_for(lambda: stack.query(f'credwatch_metadata_imdsv1_requests_total{{pod="{imdsv1.pod}"}}'),
                 20, interval=0.25, what="the IMDSv1 counter in Prometheus")
        run_imdsv1_client(processes, imdsv1, server, upstream)
        yield stack
    finally:
        if prom is not None and prom.poll() is None:
            prom.terminate()
        if demo is not None and demo.poll() is None:
            demo.send_signal(signal.SIGINT)  # the demo stops its clients and removes its cgroups
            try:
                demo.wait(timeout=20)
            except subprocess.TimeoutExpired:
                demo.kill()
        if agent is not None:
            agent.stop()
        for proc in (prom,):
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        processes.end_all()
        server.close()
        upstream.close()
        kube.stop()


def test_storm_alert_fires_for_the_storm_pod_only(stack):
    wanted = {("CredwatchCredentialRefreshStorm", stack.storm_pod),
              ("CredwatchShortLivedCredentialsDelivered", stack.storm_pod),
              ("CredwatchIMDSv1InUse", stack.imdsv1_pod),
              ("CredwatchIMDSTokenUnanswered", stack.imdsv1_pod)}
    seen: dict[tuple[str, str], float] = {}

    def firing():
        for alert in stack.alerts():
            key = (alert["labels"]["alertname"], alert["labels"].get("pod", ""))
            if alert["state"] == "firing" and key not in seen:
                seen[key] = time.monotonic() - stack.started
        return wanted <= set(seen)

    try:
        wait_for(firing, E2E_TIMEOUT, interval=0.5, what=f"alerts {sorted(wanted)}")
    except AssertionError as err:
        raise AssertionError(f"{err}; firing: {sorted(seen)}; all: {stack.alerts()}") from None
    print(f"\nseconds from the demo's first credential fetches to firing: "
          + ", ".join(f"{name} {pod[:8]} {secs:.1f}" for (name, pod), secs in sorted(seen.items())))

    # Nothing else fires or is pending: not for the healthy pods, not for the agents. (One slow
    # loopback call on a busy machine can lift a pod's p99 over CredwatchMetadataLatencyHigh's 25 ms, so
    # that alert is left to the unit tests here.)
    time.sleep(3)
    alerts = {(a["labels"]["alertname"], a["labels"].get("pod", "")) for a in stack.alerts()}
    timing = {alert for alert in alerts if alert[0] == "CredwatchMetadataLatencyHigh"}
    if timing:
        print(f"CredwatchMetadataLatencyHigh on this busy machine: {sorted(timing)}")
    assert alerts - timing == wanted, f"unexpected alerts: {alerts - timing - wanted}"
    storm = next(a for a in stack.alerts()
                 if a["labels"]["alertname"] == "CredwatchCredentialRefreshStorm")
    assert storm["labels"]["role"] == "demo-app-role"
    # The demo's client sends Java SDK v1's User-Agent: the alert names the SDK and its fix.
    assert storm["labels"]["sdk"] == "java_v1", storm
    assert "Java SDK v1" in storm["annotations"]["description"], storm
    assert storm["annotations"]["runbook_url"].endswith(
        "docs/runbooks/CredwatchCredentialRefreshStorm.md")
    assert stack.storm_pod in storm["annotations"]["summary"]


def substitutions(stack: Stack, dashboard: str) -> list[dict[str, str]]:
    """The variable values a user would pick: 'All' on the fleet dashboard; each pod in turn on
    the single-pod dashboard."""
    base = {"cluster": ".*", "node": ".*", "namespace": ".*", "workload": ".*",
            **GRAFANA_BUILTINS}
    if dashboard == "credwatch-fleet.json":
        return [dict(base, pod=".*")]
    return [dict(base, pod=pod) for pod in (stack.storm_pod, stack.healthy_pod, stack.imdsv1_pod)]


def expand(expr: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)


def test_every_dashboard_query_returns_data(stack):
    # Let rate() windows fill with a few scrapes of the storm.
    wait_for(lambda: time.monotonic() - stack.started > 8, 15, what="a few scrapes")
    pending, empty = [], []
    for dashboard, title, expr in dashboard_queries():
        # A stat's `or vector(0)` fallback would always answer: ask for the real series.
        expr = expr.removesuffix(" or vector(0)")
        results = [stack.query(expand(expr, values)) for values in substitutions(stack, dashboard)]
        if any(is_pending(name) for name in metric_names(expr)):
            if f"{dashboard} '{title}'" not in pending:
                pending.append(f"{dashboard} '{title}'")
        elif not any(results):
            empty.append(f"{dashboard} '{title}': {expr}")
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)
    if pending:
        note(f"{len(pending)} dashboard panels use metrics the agent does not export yet "
             f"(queries valid, data not checked): " + "; ".join(pending))

    # The pod variables list the pods the agents saw.
    for dashboard, var, label, selector in variable_queries():
        selector = expand(selector, {"cluster": ".*", "node": ".*", "namespace": ".*",
                                     "workload": ".*"})
        status, body = http_get(stack.prometheus_port, f"/api/v1/label/{label}/values?"
                                + urllib.parse.urlencode({"match[]": selector}))
        assert status == 200, body
        values = json.loads(body)["data"]
        if label == "pod":
            assert {stack.storm_pod, stack.healthy_pod, stack.imdsv1_pod} <= set(values), \
                f"{dashboard} ${var}: {values}"


def test_metric_names_in_rules_and_dashboards_exist(stack):
    exposition = stack.demo_text() + stack.agent.metrics_text()
    exported = exported_sample_names(exposition)
    landed = {name for name in PENDING_METRICS
              if name in exported or any(family_of(e) == name for e in exported)}
    assert not landed, f"now exported, remove from PENDING_METRICS: {sorted(landed)}"

    used = used_metric_names()
    assert used, "no metric names found in rules and dashboards"
    missing = {name: sorted(where) for name, where in used.items()
               if name not in exported and name not in PROMETHEUS_SERIES and not is_pending(name)}
    assert not missing, f"used but not exported by the agent: {json.dumps(missing, indent=1)}"
    unused = {name for name in PENDING_METRICS
              if not any(u == name or family_of(u) == name for u in used)}
    assert not unused, f"pending names no rule or dashboard uses: {unused}"
    if PENDING_METRICS:
        note("pending (used in rules/dashboards, not exported by this agent build yet): "
             + ", ".join(sorted(PENDING_METRICS)))

    # Label names in selectors exist on the metric, or come from the scrape.
    labels: dict[str, set[str]] = {}
    for (name, label_set) in Metrics.parse(stack.agent.metrics_text()) | Metrics.parse(stack.demo_text()):
        labels.setdefault(name, set()).update(dict(label_set))
    exprs = [rule["expr"] for rule in all_rules()] + [e for _, _, e in dashboard_queries()]
    for expr in exprs:
        for name, matchers in re.findall(r"\b(credwatch_[a-z0-9_]+)\{([^}]*)\}", expr):
            if is_pending(name):
                continue
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                known = labels.get(name, set()) | HARDWARE_LABELS.get(name, set())
                known |= TARGET_LABELS | {"le"}
                assert label in known, f"{name} has no label {label!r} (in: {expr})"


def test_promtool_check_metrics_on_agent_output(stack):
    promtool = tool("promtool")
    problems = {}
    # promtool lints the classic text format: what the agent serves to a scraper that does not ask
    # for OpenMetrics.
    run_status, run_text = http_get(stack.agent.port, "/metrics", PROMETHEUS_TEXT)
    assert run_status == 200
    for source, text in (("demo", stack.demo_text(PROMETHEUS_TEXT)), ("run", run_text)):
        result = run([promtool, "check", "metrics"], input=text)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or output:
            problems[source] = output
    message = "promtool check metrics on the agent's /metrics:\n" + "\n".join(
        f"[{source}]\n{output}" for source, output in problems.items())
    assert not problems, message


# --- manifests ---------------------------------------------------------------------------------


def debian_kubectl() -> str:
    """Debian's kubectl (kubernetes-client 1.20, kustomize v2.0.3 built in): /usr/bin/kubectl
    where that package owns it, else the copy scripts/setup.sh unpacks into .tools/ (some images
    have another package's /usr/bin/kubectl, which the tests do not use)."""
    candidates = [os.environ.get("KUBECTL"), str(REPO / ".tools/kubernetes-client/usr/bin/kubectl")]
    owner = run(["dpkg-query", "-S", "/usr/bin/kubectl"]).stdout.split(":")[0]
    if owner == "kubernetes-client":
        candidates.append("/usr/bin/kubectl")
    for path in filter(None, candidates):
        if Path(path).exists():
            return path
    pytest.skip("no Debian kubectl (scripts/setup.sh installs kubernetes-client)")


# Kustomization fields kustomize v5 reads without a deprecation warning (its
# Kustomization.CheckDeprecatedFields warns on bases, commonLabels, imageTags, patchesJson6902,
# patchesStrategicMerge and vars) that kustomize v2 reads the same way.
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources"}


def render(directory: Path) -> list[dict]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    deprecated = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not deprecated, f"{directory}: fields outside {KUSTOMIZATION_FIELDS}: {deprecated}"
    for resource in kustomization["resources"]:
        assert (directory / resource).is_file(), f"{directory}: {resource} is not a file"
    result = run([debian_kubectl(), "kustomize", str(directory)])
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    assert result.stderr == "", f"kubectl kustomize {directory} warned: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict]) -> dict[str, dict]:
    kinds = {}
    for obj in objects:
        assert obj["kind"] not in kinds, f"two {obj['kind']} objects"
        kinds[obj["kind"]] = obj
    return kinds


def container(objects) -> dict:
    (agent,) = by_kind(objects)["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    return agent


def test_kustomize_renders_base_and_overlay():
    version = run([debian_kubectl(), "version", "--client"]).stdout
    assert 'GitVersion:"v1.20.' in version, version
    for directory in KUSTOMIZATIONS:
        kinds = by_kind(render(directory))
        assert set(kinds) == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                              "DaemonSet", "Service", "NetworkPolicy", "ServiceMonitor",
                              "PrometheusRule"}
        for obj in kinds.values():
            if obj["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding"}:
                assert obj["metadata"]["namespace"] == "credwatch", obj["kind"]


def test_least_privilege_profile_is_generated_from_the_base():
    """deploy/overlays/least-privilege is deploy/generate.py's output (checked for staleness
    by test_generated_files_are_up_to_date): the same files as deploy/base, only the DaemonSet's
    securityContext differs (test_overlay_changes_only_the_security_context)."""
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    least = yaml.safe_load((LEAST_PRIVILEGE / "kustomization.yaml").read_text())["resources"]
    assert base == least
    for name in base:
        assert (LEAST_PRIVILEGE / name).read_text().startswith("# GENERATED by deploy/generate.py")
    # The same for the host-network profile (test_host_network_overlay_changes_only_the_pod_network).
    host = yaml.safe_load((HOST_NETWORK / "kustomization.yaml").read_text())["resources"]
    assert base == host
    for name in base:
        assert (HOST_NETWORK / name).read_text().startswith("# GENERATED by deploy/generate.py")


def test_manifests_validate_against_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate")
    newest = kv.latest_version()
    for directory in KUSTOMIZATIONS:
        for obj in render(directory):
            if obj["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # CRDs: checked field by field in test_prometheus_operator_objects
            for version in ("1.25.0", newest):  # the oldest and newest schemas the package ships
                kv.validate(obj, version, strict=True)

    # The validator is not a no-op: an unknown field in the DaemonSet fails it.
    daemonset = copy.deepcopy(by_kind(render(BASE))["DaemonSet"])
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(daemonset, newest, strict=True)


def test_daemonset_base():
    kinds = by_kind(render(BASE))
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    agent = container(render(BASE))
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    # The host's PID namespace for per-pod resolv.conf reads (docs/deploy.md); no host network.
    assert pod["hostPID"] is True and not pod.get("hostNetwork")
    # Linux nodes of the image's architectures, not Fargate, not EKS hybrid nodes.
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]},
        {"key": "eks.amazonaws.com/compute-type", "operator": "NotIn",
         "values": ["fargate", "hybrid"]},
    ]
    # Both address families (IPv6-only clusters probe and scrape the pod's IPv6 address).
    assert "--listen=[::]:9500" in agent["args"]
    # No prometheus.io annotations: the annotation-based job's target labels would collide.
    annotations = kinds["DaemonSet"]["spec"]["template"]["metadata"].get("annotations", {})
    assert not [key for key in annotations if key.startswith("prometheus.io/")]
    assert pod["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    assert agent["securityContext"]["privileged"] is True
    # Mounts: the host's cgroup2 tree read-only, nothing else (no bpffs, no BTF, no tracefs).
    assert pod["volumes"] == [{"name": "cgroup", "hostPath": {"path": "/sys/fs/cgroup",
                                                             "type": "Directory"}}]
    assert agent["volumeMounts"] == [{"name": "cgroup", "mountPath": "/sys/fs/cgroup",
                                      "readOnly": True}]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} \
        in agent["env"]
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9500, "protocol": "TCP"}]
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert agent["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"},
                                  "limits": {"cpu": "500m", "memory": "128Mi"}}
    version = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    assert agent["image"].endswith(f":{version}"), "image tag should be the workspace version"
    labels = kinds["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    assert kinds["DaemonSet"]["spec"]["selector"]["matchLabels"].items() <= labels.items()

    rbac = kinds["ClusterRole"]["rules"]
    assert rbac == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
    ]
    binding = kinds["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == kinds["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "credwatch",
                                    "namespace": "credwatch"}]


def test_overlay_changes_only_the_security_context():
    base, least = render(BASE), render(LEAST_PRIVILEGE)
    base_agent, least_agent = container(base), container(least)
    context = least_agent["securityContext"]
    assert context["privileged"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["capabilities"]["add"] == [*ATTACH_CAPABILITIES, *KEPT_CAPABILITIES]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    # Apart from the container's securityContext, the two profiles render the same objects.
    for obj in (base, least):
        by_kind(obj)["DaemonSet"]["spec"]["template"]["spec"]["containers"][0].pop("securityContext")
    assert base == least


def test_host_network_overlay_changes_only_the_pod_network():
    base, host = render(BASE), render(HOST_NETWORK)
    pod = by_kind(host)["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["hostPID"] is True
    # Apart from those two fields, the same objects as the base.
    pod.pop("dnsPolicy")
    pod["hostNetwork"] = False
    assert base == host


def test_prometheus_operator_objects():
    kinds = by_kind(render(BASE))
    service, monitor, rule = kinds["Service"], kinds["ServiceMonitor"], kinds["PrometheusRule"]
    pod_labels = kinds["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9500, "targetPort": "metrics",
                                         "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= pod_labels.items()

    spec = monitor["spec"]
    assert set(spec) <= {"jobLabel", "selector", "namespaceSelector", "endpoints"}
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": ["credwatch"]}
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    # The agent pod's own namespace/pod/container target labels would collide with the
    # workload labels of every series: dropped.
    assert {"action": "labeldrop", "regex": "(namespace|pod|container)"} in endpoint["relabelings"]
    for relabel in endpoint["relabelings"]:
        assert set(relabel) <= {"sourceLabels", "targetLabel", "action", "regex", "replacement"}

    assert set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    # Both CRD objects can be left out for clusters without the operator (docs/deploy.md).
    for obj in (monitor, rule):
        assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "monitoring"
    for obj in kinds.values():
        if obj["kind"] not in {"ServiceMonitor", "PrometheusRule"}:
            assert obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "monitoring"


def test_network_policy_admits_only_the_monitoring_namespace():
    kinds = by_kind(render(BASE))
    policy, pod = kinds["NetworkPolicy"], kinds["DaemonSet"]["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    (port,) = pod["spec"]["containers"][0]["ports"]
    assert rule["ports"] == [{"port": port["name"], "protocol": "TCP"}]


def run_help() -> str:
    binary = agent_binary()
    if not binary.exists():
        pytest.skip(f"{binary} is not built (cargo build -p agent)")
    result = run([str(binary), "run", "--help"])
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_daemonset_flags_are_accepted_by_the_agent(tmp_path):
    help_text = run_help()
    accepted = set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))
    for directory in KUSTOMIZATIONS:
        command, *args = container(render(directory))["args"]
        assert command == "run"
        for arg in args:
            assert arg.startswith("--"), arg
            assert arg.split("=", 1)[0] in accepted, f"{arg} is not in `credwatch run --help`"
        # The real parser takes them all: with a cgroup path that does not exist the agent gets
        # past argument parsing and stops at that path, before binding or loading anything.
        missing = tmp_path / "no-such-cgroup"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDWATCH_")}
        result = run([str(agent_binary()), *container(render(directory))["args"],
                      f"--cgroup-path={missing}"], env=env)
        assert result.returncode == 1, result.stderr  # clap's usage errors exit 2
        assert str(missing) in result.stderr, result.stderr


def test_one_image_recipe_that_pulls_nothing():
    """The Containerfile is the only image recipe; it starts from scratch (no registry base) and
    copies the binary `cargo xtask image` built (the runtime suite runs the result)."""
    recipes = [p.name for p in REPO.iterdir() if p.name in ("Dockerfile", "Containerfile")]
    assert recipes == ["Containerfile"]
    containerfile = (REPO / "Containerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", containerfile, re.M)
    assert froms == ["scratch"], froms
    assert not re.search(r"^RUN ", containerfile, re.M), "no RUN step: nothing runs at build time"
    assert re.search(r"^COPY --chmod=0555 \S+/credwatch /usr/bin/credwatch$", containerfile, re.M)
    assert 'ENTRYPOINT ["/usr/bin/credwatch"]' in containerfile


# --- least privilege ---------------------------------------------------------------------------


# The least-privilege profile's capabilities: those needed to load and attach (each one's
# removal makes the agent fail at start), and those the agent keeps once attached (harden.rs
# KEPT: resolv.conf of pods of other users, cgroup lookups by id), which it can run without.
ATTACH_CAPABILITIES = ["BPF", "PERFMON", "NET_ADMIN"]
KEPT_CAPABILITIES = ["SYS_PTRACE", "DAC_READ_SEARCH"]


def overlay_capabilities() -> list[str]:
    added = container(render(LEAST_PRIVILEGE))["securityContext"]["capabilities"]["add"]
    assert added == [*ATTACH_CAPABILITIES, *KEPT_CAPABILITIES]
    return ["cap_" + cap.lower() for cap in added]


def bounding_set() -> list[str]:
    out = run([tool("capsh", "apt-get install libcap2-bin"), "--print"]).stdout
    line = next(line for line in out.splitlines() if line.startswith("Bounding set ="))
    return line.split("=", 1)[1].split(",")


def effective_caps(pid: int) -> set[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(re.search(r"^CapEff:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    decoded = run(["capsh", f"--decode={mask:x}"]).stdout.strip()
    return set(decoded.split("=", 1)[1].split(",")) if mask else set()


def start_bounded_agent(processes, tmp_path, cgroup_root: Path, mount: Path, endpoint: str,
                        keep: list[str]):
    """The agent as the least-privilege DaemonSet runs it: uid 0 with only `keep` in its bounding
    (so permitted and effective) set, no_new_privs, and the cgroup2 mount read-only (a private
    mount namespace with the mount bound read-only over itself)."""
    tool("unshare", "util-linux")
    drop = [cap for cap in bounding_set() if cap not in keep]
    port = free_port()
    agent = [str(agent_binary()), "run", "--cgroup-path", str(cgroup_root), "--no-default-endpoints",
             "--metadata-endpoint", endpoint, f"--listen=127.0.0.1:{port}"]
    capsh = ["capsh", f"--drop={','.join(drop)}", "--no-new-privs", "--", "-c",
             'exec "$0" "$@"', *agent]
    m = shlex.quote(str(mount))
    script = f"mount --bind {m} {m} && mount -o remount,bind,ro {m} && exec {shlex.join(capsh)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDWATCH_")}
    stderr = tmp_path / f"agent-{'-'.join(keep) or 'none'}.stderr"
    with open(stderr, "wb") as err:
        proc = processes.spawn(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                script], stdout=subprocess.DEVNULL, stderr=err, env=env)
    return proc, port, stderr


def ready_or_exited(proc, port):
    if proc.poll() is not None:
        return "exited"
    try:
        return "ready" if http_get(port, "/readyz")[0] == 200 else None
    except OSError:
        return None


def test_least_privilege_capabilities(cgroups, pod, servers, processes, tmp_path):
    binary = agent_binary()
    if not binary.exists():
        pytest.skip(f"{binary} is not built")
    caps = overlay_capabilities()
    server = servers(credserver.CredentialServer, "127.0.0.1", lifetime=900)

    # With exactly the overlay's capabilities: ready, and counts a request.
    proc, port, stderr = start_bounded_agent(processes, tmp_path, cgroups.root, cgroups.mount,
                                             server.endpoint, caps)
    state = wait_for(lambda: ready_or_exited(proc, port), 30, interval=0.1, what="agent start")
    assert state == "ready", f"agent with {caps} failed:\n{stderr.read_text()[-3000:]}"
    # Never more than the profile grants (what it keeps once attached:
    # test_least_privilege_agent_keeps_only_what_it_needs).
    assert effective_caps(proc.pid) <= set(caps)
    assert re.search(r"^NoNewPrivs:\s*1$", Path(f"/proc/{proc.pid}/status").read_text(), re.M)
    request = (b"GET " + credserver.ROLE_LIST_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    processes.run_client("raw_client.py", ["--host", server.host, "--port", server.port,
                                           "--send-hex", request.hex()], pod)

    def counted():
        metrics = Metrics.parse(http_get(port, "/metrics")[1])
        return metrics.value("credwatch_metadata_requests_total", kind="role_list", **pod.labels)

    wait_for_count(counted, 1, "requests counted", timeout=15)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, stderr.read_text()[-2000:]

    # Without any one of those needed to attach: the agent exits with an error instead of
    # becoming ready.
    errors = {}
    for missing in ["cap_" + cap.lower() for cap in ATTACH_CAPABILITIES]:
        keep = [cap for cap in caps if cap != missing]
        proc, port, stderr = start_bounded_agent(processes, tmp_path, cgroups.root,
                                                 cgroups.mount, server.endpoint, keep)
        state = wait_for(lambda: ready_or_exited(proc, port), 30, interval=0.1,
                         what=f"agent start without {missing}")
        if state == "ready":
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        assert state == "exited", f"the agent starts without {missing}: not needed?"
        assert proc.returncode != 0
        text = stderr.read_text()
        assert "setting up the kernel programs" in text, text[-2000:]
        assert re.search(r"Operation not permitted|Permission denied", text), text[-2000:]
        errors[missing] = text.strip().splitlines()[-1][-200:]
    print("\nminimal capability set:", ", ".join(caps))
    for missing, line in errors.items():
        print(f"  without {missing}: {line}")


def test_least_privilege_agent_keeps_only_what_it_needs(cgroups, servers, processes, tmp_path):
    """Once attached, the agent under exactly the profile's capabilities drops all but those it
    keeps, without an ERROR."""
    binary = agent_binary()
    if not binary.exists():
        pytest.skip(f"{binary} is not built")
    server = servers(credserver.CredentialServer, "127.0.0.1", lifetime=900)
    proc, port, stderr = start_bounded_agent(processes, tmp_path, cgroups.root, cgroups.mount,
                                             server.endpoint, overlay_capabilities())
    state = wait_for(lambda: ready_or_exited(proc, port), 30, interval=0.1, what="agent start")
    assert state == "ready", stderr.read_text()[-3000:]
    errors = [line for line in stderr.read_text().splitlines() if re.match(r"^\[\S+ ERROR", line)]
    assert errors == []
    assert effective_caps(proc.pid) == {"cap_" + cap.lower() for cap in KEPT_CAPABILITIES}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
