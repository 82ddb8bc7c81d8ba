"""Scenario tests: real clients in kubelet-shaped cgroups talk to fake credential endpoints on
loopback while credwatch watches; its /metrics must match what the clients and servers counted.

Every scenario also checks that credwatch never alters traffic: each client call succeeded, and
the bytes the client received are the bytes the server sent (compared by digest or in full).
"""

import os
import subprocess
import sys

import pytest

from harness import credserver, http_get, wait_for, wait_for_value

CredentialServer, ApiServer, ROLE = credserver.CredentialServer, credserver.ApiServer, credserver.ROLE

REQUESTS = "credwatch_metadata_requests_total"
DURATION = "credwatch_metadata_request_duration_seconds"
IMDSV1 = "credwatch_metadata_imdsv1_requests_total"
FETCHES = "credwatch_credential_fetches_total"
LIFETIME = "credwatch_credential_remaining_lifetime_seconds"
STORM = "credwatch_credential_refresh_storm"
REJECTS = "credwatch_parse_rejects_total"
METADATA_KINDS = ("token", "role_list", "credentials")


def run_java(processes, cgroup, server, upstream, requests, imdsv2=False):
    """The Java SDK v1 policy client; returns its counts after checking it was not disturbed."""
    args = ["--host", server.host, "--port", server.port, "--requests", requests,
            "--upstream-host", upstream.host, "--upstream-port", upstream.port]
    report = processes.run_client("java_v1_policy.py", args + ["--imdsv2"] * imdsv2, cgroup)
    assert report["errors"] == 0, report
    assert report["upstream"] == requests, report
    assert report["body_sha256"] == server.body_digest(), "client got other bytes than were sent"
    served = server.counts()
    assert {kind: report[kind] for kind in METADATA_KINDS if report[kind]} == served, served
    return report


def run_botocore(processes, cgroup, server, api, calls):
    args = ["--credentials-url", f"{server.url}/v2/credentials/test", "--api-url", api.url,
            "--calls", calls]
    report = processes.run_client("botocore_client.py", args, cgroup)
    assert report == {"calls": calls, "errors": 0}
    # Every call was signed with the container credentials, not some other source.
    assert dict(api.access_keys) == {"ASIA" + server.canary: calls}
    return server.counts()["credentials"]


def run_raw(processes, cgroup, server, payload: bytes):
    """Send `payload` from `cgroup`; check both directions arrived byte for byte."""
    args = ["--host", server.host, "--port", server.port, "--send-hex", payload.hex()]
    report = processes.run_client("raw_client.py", args, cgroup)
    _, request, response = server.exchanges()[-1]
    assert bytes.fromhex(report["sent"]) == request
    assert bytes.fromhex(report["received"]) == response


def credentials_request(path=credserver.ROLE_LIST_PATH + ROLE, headers=b""):
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: metadata\r\n" + headers + b"\r\n"


def test_java_v1_storm_imdsv2_ipv4(pod, servers, agent, processes):
    server = servers(CredentialServer, "127.0.0.1", lifetime=900)  # KIAM's 15 minutes
    upstream = servers(ApiServer)
    watcher = agent(server)

    client = run_java(processes, pod, server, upstream, 20, imdsv2=True)
    assert client["credentials"] == 20, "15-minute credentials must refresh on every request"

    labels = dict(pod.labels, metadata_endpoint="custom")
    for kind in METADATA_KINDS:
        wait_for_value(watcher, client[kind], REQUESTS, kind=kind, code="200", **labels)
    metrics = wait_for_value(watcher, client["credentials"], FETCHES, role=ROLE, **labels)
    # Nothing else from this pod counted: not the upstream calls, not other kinds or codes.
    assert metrics.value(REQUESTS, **pod.labels) == sum(client[k] for k in METADATA_KINDS)
    assert metrics.value(IMDSV1, **pod.labels) == 0
    wait_for_value(watcher, 1, STORM, role=ROLE, **pod.labels)


def test_java_v1_imdsv1_ipv6(cgroups, servers, agent, processes):
    pod = cgroups.cgroupfs_pod()
    server = servers(CredentialServer, "::1", lifetime=900)
    upstream = servers(ApiServer, "::1")
    watcher = agent(server)

    client = run_java(processes, pod, server, upstream, 20)

    labels = dict(pod.labels, metadata_endpoint="custom")
    for kind in ("role_list", "credentials"):
        wait_for_value(watcher, client[kind], REQUESTS, kind=kind, code="200", **labels)
    wait_for_value(watcher, client["role_list"] + client["credentials"], IMDSV1, **pod.labels)
    wait_for_value(watcher, client["credentials"], FETCHES, role=ROLE, **labels)
    wait_for_value(watcher, 1, STORM, role=ROLE, **pod.labels)


def test_botocore_container_provider_storm(pod, servers, agent, processes):
    server = servers(CredentialServer, lifetime=840)  # inside botocore's 15-minute advisory window
    api = servers(ApiServer)
    watcher = agent(server)

    served = run_botocore(processes, pod, server, api, 15)
    assert served > 1, "botocore should refresh 14-minute container credentials on every use"

    wait_for_value(watcher, served, FETCHES, role="ecs-task", metadata_endpoint="custom", **pod.labels)
    wait_for_value(watcher, 1, STORM, role="ecs-task", **pod.labels)


def test_healthy_lifetime_is_not_a_storm(pod, servers, agent, processes):
    server = servers(CredentialServer, lifetime=21600)  # EC2's 6 hours
    upstream = servers(ApiServer)
    watcher = agent(server)

    client = run_java(processes, pod, server, upstream, 20, imdsv2=True)
    assert client["credentials"] == 1

    labels = dict(pod.labels, metadata_endpoint="custom", role=ROLE)
    wait_for_value(watcher, 1, FETCHES, **labels)
    metrics = wait_for_value(watcher, 1, LIFETIME + "_count", **labels)
    assert metrics.bucket(LIFETIME, 14400, **labels) == 0
    assert metrics.bucket(LIFETIME, 21600, **labels) == 1
    assert metrics.value(STORM, role=ROLE, **pod.labels) == 0


def test_expiration_split_across_segments(pod, servers, agent, processes):
    server = servers(CredentialServer, lifetime=900, split=True)
    upstream = servers(ApiServer)
    watcher = agent(server)

    client = run_java(processes, pod, server, upstream, 5, imdsv2=True)

    labels = dict(pod.labels, metadata_endpoint="custom", role=ROLE)
    wait_for_value(watcher, client["credentials"], FETCHES, **labels)
    metrics = wait_for_value(watcher, client["credentials"], LIFETIME + "_count", **labels)
    # The timestamp itself was reassembled, not just noticed: 900 s lands in the 900 bucket.
    assert metrics.bucket(LIFETIME, 600, **labels) == 0
    assert metrics.bucket(LIFETIME, 900, **labels) == client["credentials"]


def test_chunked_credential_document(pod, servers, agent, processes):
    """Go servers send larger documents `Transfer-Encoding: chunked`: here a chunk boundary falls
    inside the "Expiration" key and another inside its timestamp, each in its own segment."""
    server = servers(CredentialServer, lifetime=900, chunked=True, split=True)
    upstream = servers(ApiServer)
    watcher = agent(server)

    client = run_java(processes, pod, server, upstream, 5, imdsv2=True)
    assert b"Transfer-Encoding: chunked" in server.exchanges()[-1][2]

    labels = dict(pod.labels, metadata_endpoint="custom", role=ROLE)
    wait_for_value(watcher, client["credentials"], FETCHES, **labels)
    metrics = wait_for_value(watcher, client["credentials"], LIFETIME + "_count", **labels)
    assert metrics.bucket(LIFETIME, 600, **labels) == 0
    assert metrics.bucket(LIFETIME, 900, **labels) == client["credentials"]
    assert metrics.value(REJECTS) == 0, metrics.describe("credwatch_parse_rejects")


def test_latency_to_first_byte(pod, servers, agent, processes):
    server = servers(CredentialServer, lifetime=900, delay_ms=300)
    upstream = servers(ApiServer)
    watcher = agent(server)

    client = run_java(processes, pod, server, upstream, 3)

    labels = dict(pod.labels, metadata_endpoint="custom", kind="credentials")
    metrics = wait_for_value(watcher, client["credentials"], DURATION + "_count", **labels)
    assert metrics.bucket(DURATION, 0.25, **labels) == 0
    assert metrics.bucket(DURATION, 0.5, **labels) == client["credentials"]


def test_secrets_never_leave_the_agent(pod, servers, agent, processes):
    imds = servers(CredentialServer, lifetime=900)
    split = servers(CredentialServer, "::1", lifetime=900, split=True)
    ecs = servers(CredentialServer, lifetime=840)
    pod_identity = servers(CredentialServer, "::1")
    api = servers(ApiServer)
    watcher = agent(imds, split, ecs, pod_identity)

    run_java(processes, pod, imds, api, 5, imdsv2=True)
    run_java(processes, pod, split, api, 5)
    ecs_fetches = run_botocore(processes, pod, ecs, api, 3)
    run_raw(processes, pod, pod_identity,
            credentials_request("/v1/credentials", b"Authorization: pod-identity-token\r\n"))

    # The agent must have parsed all of these documents, or this test would prove nothing.
    wait_for_value(watcher, 10, FETCHES, role=ROLE, **pod.labels)
    wait_for_value(watcher, ecs_fetches, FETCHES, role="ecs-task", **pod.labels)
    wait_for_value(watcher, 1, FETCHES, role="pod-identity", **pod.labels)
    outputs = {"/metrics": watcher.metrics_text()}
    assert watcher.stop() == 0, "SIGTERM should shut the agent down cleanly"
    outputs.update(stdout=watcher.stdout(), stderr=watcher.stderr())

    for server in (imds, split, ecs, pod_identity):
        # Also as hex, in case the agent logs raw payload bytes.
        for needle in (server.canary, server.canary.encode().hex()):
            for where, text in outputs.items():
                assert needle.lower() not in text.lower(), f"credential secret in {where}"


BAD_INPUTS = {
    # reason: (server options, what the client sends)
    "not_http": ({}, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64)),
    "request_line_too_long": ({}, credentials_request("/latest/meta-data/" + "a" * 600)),
    "no_expiration": ({"expiration": "missing"}, credentials_request()),
    "bad_timestamp": ({"expiration": "malformed"}, credentials_request()),
}


@pytest.mark.parametrize("reason", BAD_INPUTS)
def test_bad_input_is_rejected_and_passed_through(reason, pod, servers, agent, processes):
    options, payload = BAD_INPUTS[reason]
    server = servers(CredentialServer, **options)
    watcher = agent(server)
    before = watcher.scrape().value(REJECTS, reason=reason)

    run_raw(processes, pod, server, payload)

    wait_for(lambda: watcher.scrape().value(REJECTS, reason=reason) > before,
             what=f"{REJECTS}{{reason={reason}}} to increase")
    assert http_get(watcher.port, "/readyz")[0] == 200


def test_plain_cgroup_is_labelled_by_its_path(cgroups, servers, agent, processes):
    plain = cgroups.plain()
    server = servers(CredentialServer)
    upstream = servers(ApiServer)
    watcher = agent(server)

    client = run_java(processes, plain, server, upstream, 2)

    total = client["role_list"] + client["credentials"]
    wait_for_value(watcher, total, REQUESTS, pod=plain.pod, container="",
                   metadata_endpoint="custom")


# The `sdk` label (docs/metrics.md). Real clients where the machine has them: curl and Python's
# urllib (its own User-Agent, as hand-rolled clients send); EMULATIONS of the SDKs that are not
# obtainable here (tests/clients/sdk_user_agents.py: their metadata calls with the User-Agent
# each sends, from its source). botocore, the JavaScript v3 and Rust SDKs: test_sdk_matrix.py.
SDK_EMULATIONS = ("java_v1", "java_v2", "go_v1", "go_v2", "js_v2", "dotnet", "ruby", "php", "cpp")
RAW_USER_AGENTS = {
    # label: the request's header lines (hand-written: what no SDK sends)
    "none": b"Accept: */*\r\n",
    "other": b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n",
}


def test_sdk_label_names_the_client(cgroups, servers, agent, processes):
    server = servers(CredentialServer)
    watcher = agent(server)
    expected = {}  # pod labels → (sdk label, credential fetches, metadata requests)

    for sdk in SDK_EMULATIONS:  # emulations: token, role list, credentials
        pod = cgroups.systemd_pod()
        report = processes.run_client(
            "sdk_user_agents.py", ["--sdk", sdk, "--host", server.host, "--port", server.port],
            pod)
        assert report["errors"] == 0, report
        expected[sdk] = (pod, 1, 3)

    pod = cgroups.systemd_pod()  # real curl
    url = f"{server.url}{credserver.ROLE_LIST_PATH}{ROLE}"
    curl = processes.spawn(
        ["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", url],
        pod.path, stdout=subprocess.PIPE, text=True)
    assert curl.communicate(timeout=30)[0] == "200"
    expected["curl"] = (pod, 1, 1)

    pod = cgroups.systemd_pod()  # real urllib: "Python-urllib/3.x"
    script = ("import urllib.request as u; "
              f"u.build_opener(u.ProxyHandler({{}})).open({url!r}, timeout=10).read()")
    python = processes.spawn([sys.executable, "-c", script], pod.path)
    assert python.wait(timeout=30) == 0
    expected["python_http"] = (pod, 1, 1)

    for label, headers in RAW_USER_AGENTS.items():
        pod = cgroups.systemd_pod()
        run_raw(processes, pod, server, credentials_request(headers=headers))
        expected[label] = (pod, 1, 1)

    for label, (pod, fetches, requests) in expected.items():
        metrics = wait_for_value(watcher, fetches, FETCHES, sdk=label, **pod.labels)
        assert metrics.value(FETCHES, **pod.labels) == fetches, metrics.describe()
        assert metrics.value(REQUESTS, sdk=label, **pod.labels) == requests, metrics.describe()
        assert metrics.value(REQUESTS, **pod.labels) == requests, metrics.describe()
    # The label is the family, never the header: no version, no platform string got through.
    exported = watcher.metrics_text()
    for needle in ("Mozilla", "OpenJDK", "aws-sdk-java", "GuzzleHttp", "urllib"):
        assert needle not in exported, f"{needle} in /metrics"
