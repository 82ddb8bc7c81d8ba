"""The real-SDK matrix, in the pod topology (tests/fixtures/podnet.py): each client runs as a pod
does, in its own network namespace and pod cgroup, against credential servers that count what
they served. For every cell credwatch must export exactly the fetches the server served, flag a
storm exactly when the server's own log shows one by the storm rule, and put the remaining
lifetime in the right bucket. The results become the table in docs/sdk-behaviour.md.

Real SDKs: botocore (PyPI), the AWS SDK for JavaScript v3 (npm), the AWS SDK for Rust
(`aws-config`, crates.io). The Java SDKs are not obtainable here: their rows are EMULATIONS of the
documented sequences and refresh policies (tests/clients/java_*), named so.
"""

from __future__ import annotations

import calendar
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import STORM_ARGS
from harness import CLIENTS, REPO, Agent, Processes, wait_for_value
from sdk_matrix import Cell, expected_storm, write_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from netlab import Lab, missing_tools  # noqa: E402
from podnet import PodNetwork  # noqa: E402

REQUESTS = "credwatch_metadata_requests_total"
IMDSV1 = "credwatch_metadata_imdsv1_requests_total"
FETCHES = "credwatch_credential_fetches_total"
LIFETIME = "credwatch_credential_remaining_lifetime_seconds"
STORM = "credwatch_credential_refresh_storm"
LIFETIME_EDGES = (60, 300, 600, 900, 1200, 1800, 3600, 7200, 14400, 21600, 43200)

LIFETIMES = {"15 min (KIAM)": 900, "14 min": 840, "6 h (EC2)": 21600}
CALLS = 12
BASE_PORT = 18000
API_PORT = 17999
CONTAINER_PATH = "/creds"  # amazon-ecs-local-container-endpoints' path, not /v2/credentials/…
JS_CLIENT = CLIENTS / "js_sdk" / "client.mjs"
RUST_CLIENT = Path(os.environ.get(
    "CREDWATCH_RUST_SDK_CLIENT",
    REPO / "target/rust-sdk-client/debug/credwatch-rust-sdk-client"))


@dataclasses.dataclass(frozen=True)
class Client:
    sdk: str
    provider: str
    endpoint: str  # "imds" (node namespace) or "container" (the pod's loopback)
    argv: tuple  # the client's command; {url} {api} {calls} {host} {port} {api_port} filled in
    env: str = ""  # "imds" or "container": which SDK variable points at the server
    extended: bool = False  # the fake IMDS serves the -extended paths
    # The `sdk` label credwatch must give its fetches (docs/metrics.md), from the User-Agent the
    # client sends: botocore's container provider sends only urllib3's, JavaScript v3 none, the
    # Rust SDK's ECS provider none (aws-config's http_credential_provider adds no user agent).
    sdk_label: str = "other"


PY = sys.executable
CLIENT_ROWS = [
    Client("botocore", "IMDS (InstanceMetadataProvider)", "imds",
           (PY, CLIENTS / "botocore_client.py", "--imds-url", "{url}", "--api-url", "{api}",
            "--calls", "{calls}"), sdk_label="botocore"),
    Client("botocore", "container (full URI)", "container",
           (PY, CLIENTS / "botocore_client.py", "--credentials-url", "{url}" + CONTAINER_PATH,
            "--api-url", "{api}", "--calls", "{calls}"), sdk_label="python_http"),
    Client("JavaScript v3", "fromInstanceMetadata", "imds",
           ("node", JS_CLIENT, "imds", "{api}", "{calls}"), env="imds", sdk_label="none"),
    Client("JavaScript v3", "fromContainerMetadata", "container",
           ("node", JS_CLIENT, "container", "{api}", "{calls}"), env="container",
           sdk_label="none"),
    Client("JavaScript v3", "fromHttp", "container",
           ("node", JS_CLIENT, "http", "{api}", "{calls}"), env="container", sdk_label="none"),
    Client("Rust (aws-config)", "ImdsCredentialsProvider", "imds",
           (RUST_CLIENT, "imds", "{api}", "{calls}"), env="imds", sdk_label="rust"),
    Client("Rust (aws-config)", "EcsCredentialsProvider", "container",
           (RUST_CLIENT, "ecs", "{api}", "{calls}"), env="container", sdk_label="none"),
    Client("Java v2 (emulation)", "IMDS, extended path served", "imds",
           (PY, CLIENTS / "java_v2_imds_emulation.py", "--host", "{host}", "--port", "{port}",
            "--requests", "{calls}", "--api-url", "{api}"), extended=True, sdk_label="java_v2"),
    Client("Java v2 (emulation)", "IMDS, extended 404 → classic", "imds",
           (PY, CLIENTS / "java_v2_imds_emulation.py", "--host", "{host}", "--port", "{port}",
            "--requests", "{calls}", "--api-url", "{api}"), sdk_label="java_v2"),
    Client("Java v1 policy (emulation)", "IMDSv2 (EC2CredentialsFetcher)", "imds",
           (PY, CLIENTS / "java_v1_policy.py", "--host", "{host}", "--port", "{port}",
            "--requests", "{calls}", "--upstream-host", "{host}", "--upstream-port",
            "{api_port}", "--imdsv2"), sdk_label="java_v1"),
]
CELLS = [(client, lifetime) for client in CLIENT_ROWS for lifetime in LIFETIMES]
RESULTS: dict[int, Cell] = {}


def cell_id(cell):
    client, lifetime = cell
    return f"{client.sdk}|{client.provider}|{lifetime}".replace(" ", "_")


@pytest.fixture(scope="module")
def matrix(cgroups, tmp_path_factory):
    """The node namespace with the fake API, and one agent watching every cell's server."""
    if missing_tools():
        pytest.fail(f"missing tools for the pod topology: {missing_tools()}")
    for what, path in (("the JavaScript v3 SDK", CLIENTS / "js_sdk/node_modules/@aws-sdk"),
                       ("the Rust SDK client", RUST_CLIENT)):
        assert path.exists(), f"{what} is not installed at {path}: run scripts/setup.sh"
    processes = Processes()
    lab = Lab(processes)
    try:
        network = PodNetwork(lab)
        api = network.server("--api", "--keep-alive", "--port", API_PORT)
        endpoints = []
        for index, (client, _) in enumerate(CELLS):
            port = BASE_PORT + index
            endpoints.append(f"imds=192.0.2.1:{port}" if client.endpoint == "imds"
                             else f"ecs=127.0.0.1:{port}")
        agent = Agent(processes, tmp_path_factory.mktemp("matrix-agent"), cgroups.root,
                      endpoints, STORM_ARGS, "info")
        yield network, api, agent
    finally:
        processes.end_all()
        lab.close()
    if len(RESULTS) == len(CELLS):
        write_table([RESULTS[i] for i in range(len(CELLS))])


def bucket_edge(lifetime: int) -> tuple[int, int]:
    """The histogram edge a remaining lifetime of just under `lifetime` falls on, and the one
    below it."""
    upper = next(edge for edge in LIFETIME_EDGES if edge >= lifetime)
    lower = LIFETIME_EDGES[LIFETIME_EDGES.index(upper) - 1]
    return upper, lower


@pytest.mark.parametrize("index", range(len(CELLS)), ids=[cell_id(c) for c in CELLS])
def test_sdk_matrix(index, matrix, cgroups):
    network, api, agent = matrix
    client, lifetime_name = CELLS[index]
    lifetime = LIFETIMES[lifetime_name]
    port = BASE_PORT + index
    cell = Cell(client.sdk, client.provider, lifetime_name, CALLS,
                label_expected=client.sdk_label)
    RESULTS[index] = cell
    pod_cgroup = cgroups.systemd_pod()
    pod = network.pod(pod_cgroup)
    options = ["--port", port, "--lifetime", lifetime, "--keep-alive"]
    if client.endpoint == "imds":
        server = network.server(*options, *(["--extended"] if client.extended else []))
    else:
        server = pod.server(*options, "--container-path", CONTAINER_PATH)
    fill = dict(url=server.url, api=f"http://192.0.2.1:{API_PORT}", calls=CALLS,
                host=server.host, port=server.port, api_port=API_PORT)
    argv = [str(arg).format(**fill) for arg in client.argv]
    with tempfile.NamedTemporaryFile(prefix="credwatch-aws-") as empty:
        env = {"PATH": os.environ["PATH"], "HOME": tempfile.gettempdir(),
               "AWS_CONFIG_FILE": empty.name, "AWS_SHARED_CREDENTIALS_FILE": empty.name,
               "NO_PROXY": "*"}
        if client.env == "imds":
            env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = server.url
        elif client.env == "container":
            env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = server.url + CONTAINER_PATH
            env["AWS_EC2_METADATA_DISABLED"] = "true"
        report = pod.run_json(argv, env=env)
    served = server.stop()
    assert report.get("errors") == 0, report

    log = served["log"]
    fetches = [(e["t"], expiry_seconds(e["expires"])) for e in log
               if e["kind"] == "credentials" and e["status"] == 200]
    cell.served = len(fetches)
    agents = {e["user_agent"] for e in log if e["kind"] == "credentials" and e["status"] == 200}
    cell.user_agent = ", ".join(sorted(a or "(none)" for a in agents))
    cell.early, cell.storm_expected = expected_storm(fetches)
    assert cell.served >= 1, served["served"]
    labels = pod_cgroup.labels

    try:
        metrics = wait_for_value(agent, cell.served, FETCHES, **labels)
    finally:
        scrape = agent.scrape()
        cell.exported = int(scrape.value(FETCHES, **labels))
        cell.label = ", ".join(sorted({dict(key)["sdk"] for key in scrape.select(FETCHES, **labels)}))
        cell.note = f"credwatch exported {cell.exported} of {cell.served} fetches"
    # All of them under the SDK the client's User-Agent names.
    if cell.label != client.sdk_label:
        cell.note = f"sdk label {cell.label}"
    assert metrics.value(FETCHES, sdk=client.sdk_label, **labels) == cell.served, \
        metrics.describe()
    # Every request counted exactly once, whatever the connection carried (keep-alive).
    wait_for_value(agent, len(log), REQUESTS, **labels)
    # IMDSv1 is a GET to IMDS without a token: the container rows' GETs carry none, and count 0.
    imdsv1 = sum(1 for e in log if e["method"] == "GET" and not e["token"])
    wait_for_value(agent, imdsv1 if client.endpoint == "imds" else 0, IMDSV1, **labels)
    # The expirations were read (they settle the storm rule) and land in the lifetime's bucket.
    metrics = wait_for_value(agent, cell.served, LIFETIME + "_count", **labels)
    upper, lower = bucket_edge(lifetime)
    assert metrics.bucket(LIFETIME, upper, **labels) == cell.served, metrics.describe()
    assert metrics.bucket(LIFETIME, lower, **labels) == 0, metrics.describe()
    if cell.storm_expected:
        metrics = wait_for_value(agent, 1, STORM, **labels)
    cell.storm_flag = int(metrics.value(STORM, **labels))
    cell.note = "" if cell.agrees else f"storm flag {cell.storm_flag}"
    assert cell.storm_flag == int(cell.storm_expected), metrics.describe()


def expiry_seconds(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def test_matrix_rule_model_matches_the_detector():
    """The Python model of the storm rule used above flags what the agent's unit tests say the
    detector flags (docs/metrics.md): ten fetches a second apart of 15-minute credentials storm
    from the sixth; one fetch per 10 minutes does not."""
    storm = [(float(t), t + 900.0) for t in range(10)]
    assert expected_storm(storm) == (9, True)
    assert expected_storm(storm[:5]) == (4, False)
    healthy = [(t * 600.0, t * 600.0 + 900) for t in range(6)]
    assert expected_storm(healthy) == (5, False)
