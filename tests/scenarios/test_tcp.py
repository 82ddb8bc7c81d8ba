"""Scenario tests for TCP connects and accepts: real clients in test cgroups connect to real
servers (on loopback, or inside network namespaces the test creates) while credwatch watches;
its counts and result labels must equal what the clients saw, exactly, and its latencies land in
the buckets the path's real delay puts them in.

Clients and servers are tests/fixtures/tcpprobe.py processes; namespaces, links and nftables
rules come from tests/fixtures/netlab.py and never touch the host's network namespace. Every test
also checks that credwatch did not alter traffic (each request got the bytes the server sent),
lost no TCP event, and is still ready.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import types

import pytest

# harness first: importing it puts tests/fixtures on sys.path.
from harness import free_port, http_get, wait_for_count, wait_for_value

import netlab  # noqa: E402
import tcpprobe  # noqa: E402

CONNECTS = "credwatch_tcp_connects_total"
DURATION = "credwatch_tcp_connect_duration_seconds"
ACCEPTS = "credwatch_tcp_accepts_total"
LOST = "credwatch_events_lost_total"
PROBE = netlab.FIXTURES / "tcpprobe.py"
PROCESS_TIMEOUT = 30

# What a client saw → the result credwatch must report for it.
RESULT_OF = {
    "established": "established",
    "ECONNREFUSED": "refused",      # a RST answered the SYN
    "ETIMEDOUT": "timeout",         # the kernel's SYN retransmissions gave up
    "gave_up": "error",             # the application closed the socket before any answer
    "EHOSTUNREACH": "error",        # an ICMP error ended the attempt
}


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def lab(processes):
    missing = netlab.missing_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed (scripts/setup.sh installs them)")
    network = netlab.Lab(processes)
    yield network
    network.close()


class Server:
    """A tcpprobe.py server process; `stop()` returns what it counted."""

    def __init__(self, lab, host, port=0, netns=None, cgroup=None, accept_delay=0.0):
        self.host = host
        argv = [sys.executable, PROBE, "serve", host, port, "--accept-delay", accept_delay,
                "--body-hex", os.urandom(48).hex()]
        self.proc = lab.spawn(argv, cgroup, netns)
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=PROCESS_TIMEOUT)
            raise AssertionError(f"server did not start: {line!r} {err[-2000:]}")
        self.port = int(line.split()[1])

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=PROCESS_TIMEOUT)
        lines = out.strip().splitlines()
        assert lines, f"server printed no report: {err[-2000:]}"
        return json.loads(lines[-1])


def start_probe(lab, cgroup, host, port, count=1, netns=None, parallel=False, syncnt=0,
                give_up_after=0.0, request=False):
    """Start a tcpprobe.py client inside `cgroup` (and `netns`); `finish()` its report."""
    argv = [sys.executable, PROBE, "connect", host, port, "--count", count]
    argv += ["--parallel"] * parallel + ["--request"] * request
    if syncnt:
        argv += ["--syncnt", syncnt]
    if give_up_after:
        argv += ["--give-up-after", give_up_after]
    return lab.spawn(argv, cgroup.path if cgroup else None, netns)


def finish(proc) -> dict:
    out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 0, f"client exited {proc.returncode}: {err[-2000:]}"
    return json.loads(out.strip().splitlines()[-1])


def probe(lab, cgroup, host, port, count=1, **options) -> dict:
    return finish(start_probe(lab, cgroup, host, port, count, **options))


def expect(expected: dict, destination: str, report: dict) -> dict:
    """Add what a client saw to `expected` {(destination, result): count}."""
    for outcome, n in report["outcomes"].items():
        assert outcome in RESULT_OF, f"client saw an outcome no test expects: {report}"
        key = (destination, RESULT_OF[outcome])
        expected[key] = expected.get(key, 0) + n
    return expected


def connects_of(metrics, cgroup) -> dict:
    """{(destination, result): count} of the connects credwatch exported for `cgroup`."""
    found = {}
    for labels, value in metrics.select(CONNECTS, **cgroup.labels).items():
        if value:
            labels = dict(labels)
            key = (labels["destination"], labels["result"])
            found[key] = found.get(key, 0) + value
    return found


def settle(watcher, cgroup, expected: dict):
    """Wait until credwatch has exported as many connects for `cgroup` as `expected` holds, then
    require exactly that breakdown by destination and result. Returns the settling scrape."""
    total = sum(expected.values())
    metrics = wait_for_value(watcher, total, CONNECTS, **cgroup.labels)
    assert connects_of(metrics, cgroup) == expected, metrics.describe("credwatch_tcp")
    return metrics


def assert_healthy(watcher, cgroup, expected: dict):
    """Nothing arrived late or twice, no TCP event was lost, and the agent is still ready."""
    assert http_get(watcher.port, "/readyz")[0] == 200
    metrics = watcher.scrape()
    assert connects_of(metrics, cgroup) == expected, metrics.describe("credwatch_tcp")
    for reason in ("tcp_ringbuf_full", "tcp_table_full"):
        assert metrics.value(LOST, reason=reason) == 0, metrics.describe("credwatch_events")


def assert_served(report: dict, server_report: dict):
    """Every request got, byte for byte, the response the server sent."""
    assert report["request_errors"] == [], report
    assert report["response_sha256"] == [server_report["response_sha256"]], report


def free_port6() -> int:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        return sock.getsockname()[1]


def agent_args(*args):
    return tuple(map(str, args))


# --- loopback ----------------------------------------------------------------------------------


def test_loopback_server_with_accept_delay_and_closed_port(pod, agent, lab):
    watcher = agent()
    server = Server(lab, "127.0.0.1", accept_delay=0.3)

    client = probe(lab, pod, "127.0.0.1", server.port, count=4, request=True)
    closed = probe(lab, pod, "127.0.0.1", free_port(), count=3)

    assert client["outcomes"] == {"established": 4}, client
    assert closed["outcomes"] == {"ECONNREFUSED": 3}, closed
    # The accept delay was real: every answer waited for it...
    assert min(client["response_seconds"]) >= 0.3, client
    served = server.stop()
    assert served["accepted"] == served["answered"] == 4
    assert_served(client, served)

    expected = expect(expect({}, "loopback", client), "loopback", closed)
    assert expected == {("loopback", "established"): 4, ("loopback", "refused"): 3}
    metrics = settle(watcher, pod, expected)
    # ...but the handshake completes in the kernel before accept(), so connect latency must not
    # include it: all four connects in the lowest buckets, none of them in the 0.25–1 s range.
    labels = dict(pod.labels, destination="loopback")
    assert metrics.value(DURATION + "_count", **labels) == 4
    assert metrics.bucket(DURATION, 0.1, **labels) == 4, metrics.describe("credwatch_tcp")
    # Refused connects are not in the (established-only) histogram, under any destination.
    assert metrics.value(DURATION + "_count", **pod.labels) == 4
    assert_healthy(watcher, pod, expected)


def test_ipv6_loopback_and_ipv4_mapped(cgroups, agent, lab):
    pod = cgroups.cgroupfs_pod()
    watcher = agent()
    server6 = Server(lab, "::1")
    server4 = Server(lab, "127.0.0.1")

    v6 = probe(lab, pod, "::1", server6.port, count=3, request=True)
    v6_closed = probe(lab, pod, "::1", free_port6(), count=2)
    # An AF_INET6 socket connecting to an IPv4-mapped address, as the JVM does for IPv4.
    mapped = probe(lab, pod, "::ffff:127.0.0.1", server4.port, count=2, request=True)
    mapped_closed = probe(lab, pod, "::ffff:127.0.0.1", free_port(), count=1)

    assert v6["outcomes"] == {"established": 3}, v6
    assert mapped["outcomes"] == {"established": 2}, mapped
    assert v6_closed["outcomes"] == {"ECONNREFUSED": 2}, v6_closed
    assert mapped_closed["outcomes"] == {"ECONNREFUSED": 1}, mapped_closed
    assert_served(v6, server6.stop())
    assert_served(mapped, server4.stop())

    expected = {}
    for report in (v6, v6_closed, mapped, mapped_closed):
        expect(expected, "loopback", report)
    assert expected == {("loopback", "established"): 5, ("loopback", "refused"): 3}
    metrics = settle(watcher, pod, expected)
    labels = dict(pod.labels, destination="loopback")
    assert metrics.value(DURATION + "_count", **labels) == 5
    assert metrics.bucket(DURATION, 0.1, **labels) == 5
    assert_healthy(watcher, pod, expected)


def test_host_network_process_in_plain_cgroup(cgroups, agent, lab):
    plain = cgroups.plain()  # not kubelet-shaped: labelled by its path
    watcher = agent()
    server = Server(lab, "127.0.0.1")

    client = probe(lab, plain, "127.0.0.1", server.port, count=2, request=True)
    closed = probe(lab, plain, "127.0.0.1", free_port(), count=1)

    assert client["outcomes"] == {"established": 2} and closed["outcomes"] == {"ECONNREFUSED": 1}
    assert_served(client, server.stop())
    assert plain.pod.startswith("/credwatch-test-") and plain.container == ""
    expected = expect(expect({}, "loopback", client), "loopback", closed)
    settle(watcher, plain, expected)
    assert_healthy(watcher, plain, expected)


# --- accepts -----------------------------------------------------------------------------------


def test_accepts_are_counted_for_the_listening_pod(pod, agent, lab):
    watcher = agent()
    # The listener is in the pod; the client is this test process, outside the watched subtree.
    server = Server(lab, "127.0.0.1", cgroup=pod.path)

    client = tcpprobe.run_attempts("127.0.0.1", server.port, 6, request=True)

    assert client["outcomes"] == {"established": 6}, client
    served = server.stop()
    assert served["accepted"] == served["answered"] == 6
    assert_served(client, served)
    metrics = wait_for_value(watcher, 6, ACCEPTS, **pod.labels)
    # The pod connected nowhere: the connections were inbound.
    assert connects_of(metrics, pod) == {}
    assert_healthy(watcher, pod, {})
    assert watcher.scrape().value(ACCEPTS, **pod.labels) == 6


def test_pods_in_their_own_network_namespaces_listening_on_the_same_port(cgroups, agent, lab):
    # Every pod has its own network namespace and many listen on the same port: the accepts
    # must still go to the pod whose socket accepted them.
    pod_a, pod_b = cgroups.systemd_pod(), cgroups.cgroupfs_pod()
    outside, ns_a, ns_b = lab.netns("cli"), lab.netns("poda"), lab.netns("podb")
    lab.veth(outside, "198.18.2.1/30", ns_a, "198.18.2.2/30")
    lab.veth(outside, "198.18.2.5/30", ns_b, "198.18.2.6/30")
    watcher = agent()
    server_a = Server(lab, "198.18.2.2", 8080, netns=ns_a, cgroup=pod_a.path)
    server_b = Server(lab, "198.18.2.6", 8080, netns=ns_b, cgroup=pod_b.path)

    # Clients in the outside namespace and outside the watched cgroups.
    to_a = finish(start_probe(lab, None, "198.18.2.2", 8080, 3, outside, request=True))
    to_b = finish(start_probe(lab, None, "198.18.2.6", 8080, 2, outside, request=True))

    assert to_a["outcomes"] == {"established": 3} and to_b["outcomes"] == {"established": 2}
    assert_served(to_a, server_a.stop())
    assert_served(to_b, server_b.stop())
    wait_for_value(watcher, 3, ACCEPTS, **pod_a.labels)
    metrics = wait_for_value(watcher, 2, ACCEPTS, **pod_b.labels)
    assert metrics.value(ACCEPTS, **pod_a.labels) == 3
    assert_healthy(watcher, pod_a, {})
    assert_healthy(watcher, pod_b, {})


def test_host_network_listeners_on_the_same_port_of_different_addresses(cgroups, agent, lab):
    # Two hostNetwork pods (plain cgroups here) sharing the node's network namespace, each
    # listening on the same port of its own address (like node-local-dns on 169.254.20.10:53
    # next to a resolver on 127.0.0.53:53): each pod's accepts are its own.
    pod_a, pod_b = cgroups.plain(), cgroups.plain()
    watcher = agent()
    port = free_port()
    server_a = Server(lab, "127.0.0.1", port, cgroup=pod_a.path)
    server_b = Server(lab, "127.0.0.2", port, cgroup=pod_b.path)

    to_a = tcpprobe.run_attempts("127.0.0.1", port, 3, request=True)
    to_b = tcpprobe.run_attempts("127.0.0.2", port, 2, request=True)

    assert to_a["outcomes"] == {"established": 3} and to_b["outcomes"] == {"established": 2}
    assert_served(to_a, server_a.stop())
    assert_served(to_b, server_b.stop())

    def both():
        metrics = watcher.scrape()
        return metrics.value(ACCEPTS, **pod_a.labels) + metrics.value(ACCEPTS, **pod_b.labels)

    wait_for_count(both, 5, what="accepts of both pods")
    metrics = watcher.scrape()
    assert (metrics.value(ACCEPTS, **pod_a.labels), metrics.value(ACCEPTS, **pod_b.labels)) \
        == (3, 2), metrics.describe("credwatch_tcp_accepts")
    assert_healthy(watcher, pod_a, {})
    assert_healthy(watcher, pod_b, {})


# --- network namespaces: timeouts, ICMP errors, latency, DNAT -----------------------------------

# Inside the server namespace only: port 9 swallows SYNs, port 10 answers them with an ICMP
# error, port 11 with a firewall's RST; nothing listens on port 12 (the kernel's RST).
SERVER_FILTER = """
table ip credwatch_test {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 9 drop
    tcp dport 10 reject with icmp type admin-prohibited
    tcp dport 11 reject with tcp reset
  }
}
"""


def test_timeouts_errors_and_refusals_from_a_filtering_host(pod, agent, lab):
    client_ns, server_ns = lab.netns("cli"), lab.netns("srv")
    lab.veth(client_ns, "198.18.0.1/30", server_ns, "198.18.0.2/30")
    server_ns.nft(SERVER_FILTER)
    watcher = agent()

    host = "198.18.0.2"
    started = {
        # TCP_SYNCNT=1: one retransmission, so the kernel gives up after about 3 s.
        "timeout": start_probe(lab, pod, host, 9, 3, client_ns, parallel=True, syncnt=1),
        # The application's own deadline: non-blocking connect, close after 0.5 s.
        "gave_up": start_probe(lab, pod, host, 9, 2, client_ns, parallel=True,
                               give_up_after=0.5),
        "icmp": start_probe(lab, pod, host, 10, 2, client_ns, parallel=True),
        "firewall_rst": start_probe(lab, pod, host, 11, 1, client_ns),
        "closed": start_probe(lab, pod, host, 12, 2, client_ns),
    }
    reports = {name: finish(proc) for name, proc in started.items()}

    assert reports["timeout"]["outcomes"] == {"ETIMEDOUT": 3}, reports
    assert reports["gave_up"]["outcomes"] == {"gave_up": 2}, reports
    assert reports["icmp"]["outcomes"] == {"EHOSTUNREACH": 2}, reports
    assert reports["firewall_rst"]["outcomes"] == {"ECONNREFUSED": 1}, reports
    assert reports["closed"]["outcomes"] == {"ECONNREFUSED": 2}, reports

    expected = {}
    for report in reports.values():
        expect(expected, "external", report)
    assert expected == {("external", "timeout"): 3, ("external", "error"): 4,
                        ("external", "refused"): 3}
    metrics = settle(watcher, pod, expected)
    # Nothing was established, so nothing is in the latency histogram.
    assert metrics.value(DURATION + "_count", **pod.labels) == 0
    assert_healthy(watcher, pod, expected)


def test_connect_latency_over_a_slow_path(pod, agent, lab):
    client_ns, server_ns = lab.netns("cli"), lab.netns("srv")
    # Everything from the server reaches the client 150 ms late, the SYN-ACK included.
    delay = 0.15
    lab.delay_line(client_ns, "198.18.1.1", server_ns, "198.18.1.2", delay)
    watcher = agent(extra_args=agent_args("--cluster-cidr", "198.18.1.0/24"))
    server = Server(lab, "198.18.1.2", netns=server_ns)

    client = probe(lab, pod, "198.18.1.2", server.port, count=3, request=True, netns=client_ns)

    assert client["outcomes"] == {"established": 3}, client
    assert min(client["connect_seconds"]) >= delay, client
    assert_served(client, server.stop())
    # The recorded time itself: at least the path's delay, at most what the client measured
    # around its connect() call (which starts before and ends after the kernel's).
    assert_latencies(watcher, pod, client, "cluster", between=(0.1, 0.25),
                     least=3 * delay, slack=0.003)


def assert_latencies(watcher, pod, client, destination, between, least, slack):
    """Every connect `client` made was established and exported under `destination`, each in
    the histogram's buckets above `between[0]` and up to `between[1]`, their sum at least `least`
    and at most what the client measured around its connect() calls plus `slack`."""
    n = client["outcomes"]["established"]
    expected = expect({}, destination, client)
    metrics = settle(watcher, pod, expected)
    labels = dict(pod.labels, destination=destination)
    assert metrics.value(DURATION + "_count", **labels) == n
    low, high = between
    assert metrics.bucket(DURATION, low, **labels) == 0, metrics.describe("credwatch_tcp")
    assert metrics.bucket(DURATION, high, **labels) == n, metrics.describe("credwatch_tcp")
    recorded = metrics.value(DURATION + "_sum", **labels)
    assert least <= recorded <= sum(client["connect_seconds"]) + slack, (recorded, client)
    assert_healthy(watcher, pod, expected)


# Inside the server namespace only: the first SYN of every connect to port 13 is dropped (every
# other SYN to that port, and each connect's retransmission is its second), so that each connect
# completes with its SYN retransmission, a second or so after connect().
LOSE_FIRST_SYN = """
table ip credwatch_test {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 13 tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 drop
  }
}
"""


def test_connect_latency_with_a_retransmitted_syn(pod, agent, lab):
    """A connect whose first SYN is lost: its latency is from the connect, the retransmission
    timeout included, not the round trip of the SYN that got through (which is what the kernel
    measures, and what credwatch counts for connects whose SYN went once)."""
    client_ns, server_ns = lab.netns("cli"), lab.netns("srv")
    lab.veth(client_ns, "198.18.2.1/30", server_ns, "198.18.2.2/30")
    server_ns.nft(LOSE_FIRST_SYN)
    watcher = agent()
    server = Server(lab, "198.18.2.2", port=13, netns=server_ns)

    client = probe(lab, pod, "198.18.2.2", server.port, count=2, netns=client_ns)

    assert client["outcomes"] == {"established": 2}, client
    # The first retransmission timeout is 1 s (TCP_TIMEOUT_INIT).
    assert min(client["connect_seconds"]) >= 1.0, client
    server.stop()
    # The recorded time: at least the timeout, at most what the client measured around its
    # connect() calls, give or take a clock tick (the kernel reads a tick-resolution clock for
    # these, up to 10 ms at HZ=100) at each end.
    assert_latencies(watcher, pod, client, "external", between=(0.25, 3.0),
                     least=2 * 1.0 - 0.02, slack=0.02)


METADATA = "192.0.2.254"  # a fake metadata-like address, only ever inside the test namespace
SERVICE = "198.19.0.10"   # a kube-proxy-like service address, in --cluster-cidr
AWS_API = "198.18.5.5"    # in --aws-api-cidr


def dnat_rules(port: int) -> str:
    """OUTPUT-chain DNAT to the loopback server, as KIAM's and kube-proxy's rules do."""
    return f"""
table ip credwatch_test {{
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr {METADATA} tcp dport 80 dnat to 127.0.0.1:{port}
    ip daddr {METADATA} tcp dport 81 dnat to 127.0.0.1:{port}
    ip daddr {SERVICE} tcp dport 80 dnat to 127.0.0.1:{port}
    ip daddr {AWS_API} tcp dport 443 dnat to 127.0.0.1:{port}
  }}
}}
"""


def test_destination_is_the_address_asked_for_before_dnat(pod, agent, lab):
    ns = lab.netns("dnat")
    # Routes for the original destinations, so that connect() gets as far as the DNAT rule.
    ns.dead_end("192.0.2.1/24", "198.18.0.0/15")
    server = Server(lab, "127.0.0.1", netns=ns)
    ns.nft(dnat_rules(server.port))
    watcher = agent(types.SimpleNamespace(endpoint=f"{METADATA}:80"),
                    extra_args=agent_args("--cluster-cidr", "198.19.0.0/16",
                                          "--aws-api-cidr", "198.18.5.0/24"))

    asked = [  # (destination class credwatch must report, host, port, attempts)
        ("metadata", METADATA, 80, 3),
        ("external", METADATA, 81, 1),  # the metadata address on another port is not metadata
        ("cluster", SERVICE, 80, 2),
        ("aws_api", AWS_API, 443, 1),
        ("loopback", "127.0.0.1", server.port, 1),
    ]
    started = [(destination, start_probe(lab, pod, host, port, count, ns, request=True))
               for destination, host, port, count in asked]
    # A DNS port on loopback, nothing listening: dns (the port decides), refused.
    dns = start_probe(lab, pod, "127.0.0.1", 53, 1, ns)
    reports = [(destination, finish(proc)) for destination, proc in started]
    dns_report = finish(dns)

    served = server.stop()
    expected = {}
    for (destination, _, _, count), (_, report) in zip(asked, reports):
        assert report["outcomes"] == {"established": count}, (destination, report)
        assert_served(report, served)  # the rewrite reached the server, traffic unaltered
        expect(expected, destination, report)
    assert served["accepted"] == served["answered"] == 8
    assert dns_report["outcomes"] == {"ECONNREFUSED": 1}, dns_report
    expect(expected, "dns", dns_report)

    metrics = settle(watcher, pod, expected)
    assert metrics.value(CONNECTS, destination="metadata", **pod.labels) == 3
    assert metrics.value(DURATION + "_count", destination="metadata", **pod.labels) == 3
    assert_healthy(watcher, pod, expected)


# --- the connect table ---------------------------------------------------------------------------

CONNECT_SLOTS = 8192  # agent_common::tcp::CONNECT_TABLE_SIZE
CONNECT_TABLE = "CW_TCP_CONNECTS"


def agent_map_id(pid: int, name: str) -> int:
    """The id of the map called `name` among those process `pid` holds descriptors for."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("map_id:"):
                        ids.add(int(line.split(":")[1]))
        except OSError:
            continue
    out = subprocess.run(["bpftool", "-j", "map", "show"], check=True, capture_output=True, text=True)
    found = [m["id"] for m in json.loads(out.stdout) if m["id"] in ids and m.get("name") == name]
    assert len(found) == 1, f"{name} among the agent's maps: {found}"
    return found[0]


def fill_connect_table(map_id: int, start_ns: int) -> None:
    """Every slot held by a connect in progress that started at `start_ns` (CLOCK_MONOTONIC, the
    base of the kernel's clocks, fine and coarse), of a socket no test has (cookie 2^64 − 1 − slot); `start_ns` 0 frees them."""
    def hexed(data: bytes) -> str:
        return " ".join(f"{b:02x}" for b in data)

    lines = []
    for slot in range(CONNECT_SLOTS):
        # PendingConnect: cookie, start_ns, cgroup_id, addr[16], port, expired, _pad[5] (48 bytes)
        value = struct.pack("<QQQ16sHB5x", 2**64 - 1 - slot, start_ns, 1, bytes(16), 1, 0)
        lines.append(f"map update id {map_id} key hex {hexed(struct.pack('<I', slot))} value hex {hexed(value)}")
    with tempfile.NamedTemporaryFile("w", suffix=".bpftool") as batch:
        batch.write("\n".join(lines) + "\n")
        batch.flush()
        subprocess.run(["bpftool", "batch", "file", batch.name], check=True, capture_output=True, text=True)


def test_a_connect_whose_slot_is_held_is_counted_lost_and_the_slot_freed_later(pod, agent, lab):
    """The connect table is direct-mapped by socket cookie: a connect whose slot another connect
    in progress holds is not recorded, and is counted lost, never silently dropped; once the
    slots are free (or stale) connects are recorded again. Traffic is never affected."""
    watcher = agent()
    server = Server(lab, "127.0.0.1", cgroup=pod.path)
    table = agent_map_id(watcher.proc.pid, CONNECT_TABLE)

    # Every slot held by a connect that started just now: the next two connects are refused.
    fill_connect_table(table, time.monotonic_ns())
    held = probe(lab, pod, "127.0.0.1", server.port, 2, request=True)
    assert held["outcomes"] == {"established": 2}, held
    wait_for_count(lambda: watcher.scrape().value(LOST, reason="tcp_table_full"), 2,
                   what="connects counted as tcp_table_full")

    # Slots older than 300 s are stale (their socket never reported): taken over, recorded. The
    # kernel compares ages modulo 2^64 (`now.wrapping_sub(start)`), so a start 400 s before now
    # is 400 s old even on a machine that booted less than 400 s ago.
    fill_connect_table(table, (time.monotonic_ns() - 400 * 10**9) % 2**64)
    stale = probe(lab, pod, "127.0.0.1", server.port, 1, request=True)
    assert stale["outcomes"] == {"established": 1}, stale
    settle(watcher, pod, {("loopback", "established"): 1})

    # Free slots: recorded.
    fill_connect_table(table, 0)
    free = probe(lab, pod, "127.0.0.1", server.port, 1, request=True)
    assert free["outcomes"] == {"established": 1}, free
    settle(watcher, pod, {("loopback", "established"): 2})

    served = server.stop()
    assert served["accepted"] == 4, served
    metrics = watcher.scrape()
    # The refused records cost nothing else: the accepts were all counted, nothing else was lost.
    assert metrics.value(ACCEPTS, **pod.labels) == 4
    assert metrics.value(LOST, reason="tcp_table_full") == 2
    assert metrics.value(LOST, reason="tcp_ringbuf_full") == 0
    assert http_get(watcher.port, "/readyz")[0] == 200
