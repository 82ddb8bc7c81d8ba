"""Credential traffic in the pod topology beyond the SDK matrix: the IMDSv2 hop-limit failure
(token answers dropped one hop before the pod, SDKs falling back to IMDSv1) and metadata calls
sent through an HTTP proxy. Real SDKs (botocore, the JavaScript v3 SDK) against fake servers in
namespaces the test creates, at TEST-NET addresses only (tests/fixtures/podnet.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import STORM_ARGS
from harness import CLIENTS, REPO, Processes, wait_for_value

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from netlab import Lab, missing_tools  # noqa: E402
from podnet import FIXTURES, PodNetwork, RoutedPod  # noqa: E402

REQUESTS = "credwatch_metadata_requests_total"
IMDSV1 = "credwatch_metadata_imdsv1_requests_total"
FETCHES = "credwatch_credential_fetches_total"
PY = sys.executable
LOADGEN = Path(os.environ.get("CREDWATCH_LOADGEN", REPO / "target/debug/credwatch-loadgen"))


@pytest.fixture
def lab():
    if missing_tools():
        pytest.fail(f"missing tools for the pod topology: {missing_tools()}")
    processes = Processes()
    lab = Lab(processes)
    yield lab
    processes.end_all()
    lab.close()


# An empty shared config and credentials file for the SDKs, removed when the test run ends.
_EMPTY_AWS_DIR = tempfile.TemporaryDirectory(prefix="credwatch-aws-")
_EMPTY_AWS_FILE = Path(_EMPTY_AWS_DIR.name) / "empty"
_EMPTY_AWS_FILE.touch()


def clean_env(**extra) -> dict:
    empty = str(_EMPTY_AWS_FILE)
    return {"PATH": os.environ["PATH"], "HOME": tempfile.gettempdir(),
            "AWS_CONFIG_FILE": empty, "AWS_SHARED_CREDENTIALS_FILE": empty, **extra}


def fetch_credentials_argv(sdk: str, url: str):
    """A client that resolves credentials once, through the SDK's IMDS provider. (The API calls
    are not the point here; the credential provider is.)"""
    if sdk == "botocore":
        return [PY, "-c", BOTOCORE_RESOLVE, url]
    return ["node", CLIENTS / "js_sdk" / "resolve.mjs"]


BOTOCORE_RESOLVE = """
import json, os, sys
os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = sys.argv[1]
import botocore.session
session = botocore.session.get_session()
resolver = session.get_component("credential_provider")
resolver.providers = [p for p in resolver.providers if p.METHOD == "iam-role"]
print(json.dumps({"resolved": session.get_credentials() is not None}))
"""


@pytest.mark.parametrize("sdk", ["botocore", "javascript_v3"])
@pytest.mark.parametrize("hops", [1, 2])
def test_imdsv2_hop_limit(hops, sdk, lab, cgroups, agent):
    """IMDS answers the token PUT with IP TTL = its hop limit. One router between pod and node:
    with 1 the answer dies at the router, the SDK times out and falls back to IMDSv1; with 2 it
    arrives. credwatch must show exactly the unanswered token requests and the IMDSv1 GETs the
    server saw."""
    pod_cgroup = cgroups.systemd_pod()
    pod = RoutedPod(lab, pod_cgroup)
    server = pod.node_server("--token-ttl-hops", hops, "--lifetime", 21600, "--keep-alive")
    # The SDK gives up on the token after its 1 s timeout and closes its side (a FIN, which
    # may still be answered): the request is unanswered once --metadata-timeout has passed.
    watcher = agent(Declared("imds", server), extra_args=(*STORM_ARGS, "--metadata-timeout", "2"))
    env = clean_env(AWS_EC2_METADATA_SERVICE_ENDPOINT=server.url, NO_PROXY="*")
    report = pod.run_json(fetch_credentials_argv(sdk, server.url), env=env)
    assert report["resolved"], report
    log = server.stop()["log"]
    tokens = sum(1 for e in log if e["kind"] == "token")
    unanswered = tokens if hops == 1 else 0
    v1 = sum(1 for e in log if e["method"] == "GET" and not e["token"])
    assert tokens >= 1, log
    assert (v1 > 0) == (hops == 1), f"IMDSv1 fallback only when the token answer is lost: {log}"
    labels = dict(pod_cgroup.labels, metadata_endpoint="imds")
    wait_for_value(watcher, len(log) - unanswered, REQUESTS, code="200", **labels)
    wait_for_value(watcher, v1, IMDSV1, **pod_cgroup.labels)
    metrics = wait_for_value(watcher, unanswered, REQUESTS, kind="token", code="no_response",
                             **labels)
    assert metrics.value(REQUESTS, kind="token", code="200", **labels) == tokens - unanswered


class Declared:
    """A server (or an address) as the `agent` fixture declares it: `KIND=ADDR:PORT`."""

    def __init__(self, kind, server):
        address = server if isinstance(server, str) else server.endpoint
        self.endpoint = f"{kind}={address}"



def test_metadata_calls_through_an_http_proxy(lab, cgroups, agent):
    """botocore honours HTTP_PROXY for its IMDS calls (unless NO_PROXY covers the address): the
    pod then talks to the proxy, and the proxy to IMDS. credwatch sees nothing from the pod and
    the calls under the proxy's own pod, which is what docs/metrics.md says."""
    network = PodNetwork(lab)
    client_cgroup, proxy_cgroup = cgroups.systemd_pod(), cgroups.systemd_pod()
    pod = network.pod(client_cgroup)
    server = network.server("--lifetime", 900)
    proxy = lab.processes.spawn(
        network.node.exec_argv([PY, FIXTURES / "httpproxy.py", "--host", "192.0.2.1"]),
        proxy_cgroup.path, stdout=subprocess.PIPE, text=True)
    line = proxy.stdout.readline()
    assert line.startswith("READY "), line
    proxy_url = f"http://192.0.2.1:{line.split()[1]}"
    api = network.server("--api")
    watcher = agent(Declared("imds", server))
    report = pod.run_json([PY, CLIENTS / "botocore_client.py", "--imds-url", server.url,
                           "--api-url", api.url, "--calls", "3", "--proxy", proxy_url],
                          env=clean_env())
    assert report["errors"] == 0, report
    log = server.stop()["log"]
    fetches = sum(1 for e in log if e["kind"] == "credentials")
    assert fetches >= 1, log
    wait_for_value(watcher, len(log), REQUESTS, **proxy_cgroup.labels)
    metrics = wait_for_value(watcher, fetches, FETCHES, **proxy_cgroup.labels)
    assert metrics.value(REQUESTS, **client_cgroup.labels) == 0, metrics.describe()
    proxy.kill()
    proxy.wait()


def test_connect_time_redirect(lab, cgroups, agent):
    """A program that rewrites the destination inside connect() (as Cilium's socket-level load
    balancing does for a LocalRedirectPolicy sending the metadata address to a node-local
    credential agent), attached before credwatch's: the packets go to the redirect target, so
    credwatch sees the calls only when that target is declared as an endpoint (docs/metrics.md).
    192.0.2.254:80 stands for the metadata address the SDK is configured with."""
    network = PodNetwork(lab)
    pod_cgroup = cgroups.systemd_pod()
    pod = network.pod(pod_cgroup)
    asked, target = "192.0.2.254:80", "192.0.2.1:18080"
    redirect = lab.spawn([LOADGEN, "redirect", "--cgroup-path", cgroups.root,
                          "--from", asked, "--to", target])
    assert redirect.stdout.readline().strip() == "ready", redirect.stderr.read()
    argv = fetch_credentials_argv("botocore", f"http://{asked}")
    labels = pod_cgroup.labels

    # Only the address the application asked for declared: nothing is seen. A call to another,
    # declared server afterwards marks when the agent has read everything before it.
    server = network.server("--port", 18080, "--lifetime", 900, "--keep-alive")
    marker = network.server("--port", 18081)
    watcher = agent(Declared("imds", asked), Declared("custom", marker))
    pod.run_json(argv, env=clean_env())
    pod.run_json([PY, CLIENTS / "credential_fetch.py", "--host", "192.0.2.1", "--port", 18081])
    wait_for_value(watcher, 1, REQUESTS, metadata_endpoint="custom", **labels)
    assert len(server.stop()["log"]) >= 2, "the redirect delivered the SDK's calls"
    assert watcher.scrape().value(REQUESTS, metadata_endpoint="imds", **labels) == 0
    watcher.stop()

    # The redirect target declared: every call counted, exactly.
    server = network.server("--port", 18080, "--lifetime", 900, "--keep-alive")
    watcher = agent(Declared("imds", server))
    pod.run_json(argv, env=clean_env())
    log = server.stop()["log"]
    wait_for_value(watcher, len(log), REQUESTS, metadata_endpoint="imds", **labels)
    wait_for_value(watcher, 1, FETCHES, metadata_endpoint="imds", **labels)
    redirect.send_signal(signal.SIGTERM)
    assert redirect.wait(timeout=10) == 0
