"""DNS scenario tests: glibc's resolver (getaddrinfo, through python's socket module) runs in a
test cgroup (kubelet-shaped, or plain), inside a mount namespace of its own whose /etc/resolv.conf
points at a DNS server on a private loopback address; credwatch's /metrics must match what the
server itself logged or received, exactly.

Servers: dnsmasq from Debian (its query log, parsed, is the independent count), and small Python
servers for what dnsmasq cannot do (a slow upstream, a sink that never answers). Everything stays
on loopback; the servers run outside the watched cgroup subtree.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import CLIENTS, free_port, http_get, wait_for, wait_for_count, wait_for_value
import dnsserver  # tests/fixtures, put on sys.path by harness
from dnsserver import Dnsmasq, UdpDnsServer

REQUESTS = "credwatch_dns_requests_total"
DURATION = "credwatch_dns_request_duration_seconds"
EXPANSION_QUERIES = "credwatch_dns_search_expansion_queries_total"
EXPANSION_SECONDS = "credwatch_dns_search_expansion_seconds_total"
TRUNCATED = "credwatch_dns_truncated_responses_total"
NAMES = "credwatch_dns_name_queries_total"
MALFORMED = "credwatch_dns_malformed_total"
UNMATCHED = "credwatch_dns_unmatched_responses_total"
LOST = "credwatch_events_lost_total"

# Private loopback addresses, one per role, so no test depends on another's server being gone.
DNSMASQ_V4 = "127.0.0.77"
SLOW_UPSTREAM = "127.0.0.78"
SINK = "127.0.0.79"
RAW_SINK = "127.0.0.80"
BURST_SINK = "127.0.0.81"

SEARCH = ("ns1.svc.cluster.local", "svc.cluster.local", "cluster.local")
KUBE_RESOLV_CONF = f"search {' '.join(SEARCH)}\nnameserver {{ns}}\noptions ndots:5\n"
CLIENT_DEADLINE = 30


@pytest.fixture
def dns_agent(agent):
    """Factory: credwatch with only DNS to watch (one metadata endpoint is mandatory: a loopback
    port nobody uses) plus `args`."""

    def start(*args):
        return agent(extra_args=("--no-default-endpoints",
                                 "--metadata-endpoint", f"127.0.0.1:{free_port()}", *args))

    return start


class PodLookup:
    """dns_lookup.py in `cgroup`, in its own mount namespace with `resolv_conf` bind-mounted on
    /etc/resolv.conf (the namespace, and the mount, die with the process)."""

    def __init__(self, processes, cgroup, workdir, resolv_conf: str, names, family="unspec"):
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "resolv.conf"
        conf.write_text(resolv_conf)
        argv = ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"', "sh",
                str(conf), sys.executable, str(CLIENTS / "dns_lookup.py"),
                "--family", family, *names]
        self.proc = processes.spawn(argv, cgroup.path, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], CLIENT_DEADLINE)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"dns_lookup.py gave no report: {err[-2000:]}")
        report = json.loads(line)
        self.results, self.seconds = report["results"], report["seconds"]

    def release(self) -> None:
        """Let the client exit (it has been kept alive for the agent's resolv.conf read)."""
        _, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, f"dns_lookup.py exited {self.proc.returncode}: {err}"


@contextlib.contextmanager
def lookup(processes, cgroup, workdir, resolv_conf, names, family="unspec"):
    client = PodLookup(processes, cgroup, workdir, resolv_conf, names, family)
    yield client
    client.release()


def expect_requests(watcher, logged, labels):
    """The agent's requests per (qtype, rcode) equal the server's log, and nothing else counted."""
    counts = collections.Counter((q.qtype, q.rcode) for q in logged)
    metrics = None
    for (qtype, rcode), n in sorted(counts.items()):
        metrics = wait_for_value(watcher, n, REQUESTS, qtype=qtype, rcode=rcode, **labels)
    assert metrics.value(REQUESTS, **labels) == len(logged), dns_samples(metrics)
    return metrics


def dns_samples(metrics) -> str:
    """The agent's DNS samples without histogram buckets, for failure messages."""
    return "\n".join(line for line in metrics.describe("credwatch_dns").splitlines()
                     if "_bucket{" not in line)


def assert_clean(metrics):
    """Every response matched its query and no event was lost."""
    assert metrics.value(UNMATCHED) == 0, dns_samples(metrics)
    assert metrics.value(LOST) == 0, metrics.describe("credwatch_events_lost")


# --- 1. search-list amplification --------------------------------------------------------------


def test_search_list_amplification_matches_dnsmasq_log(pod, servers, dns_agent, processes,
                                                       tmp_path):
    dnsmasq = servers(Dnsmasq, tmp_path / "dnsmasq", [DNSMASQ_V4], [
        "--address=/api.example.com/192.0.2.10", "--address=/api.example.com/2001:db8::10",
        "--local=/example.com/", "--local=/cluster.local/"])
    watcher = dns_agent()
    # An external name that exists, one that does not, and an in-cluster-looking miss (which
    # itself ends in a search suffix: its final absolute query is not an expansion).
    names = ["api.example.com", "missing.example.com", "nosuch.svc.cluster.local"]

    with lookup(processes, pod, tmp_path / "client", KUBE_RESOLV_CONF.format(ns=DNSMASQ_V4),
                names) as client:
        assert client.results["api.example.com"] == ["192.0.2.10", "2001:db8::10"]
        assert client.results["missing.example.com"].startswith("error")
        logged = dnsmasq.wait_answered(1)
        # Independently: an expansion query is a looked-up name plus a search suffix, NXDOMAIN.
        expanded = {f"{name}.{suffix}" for name in names for suffix in SEARCH}
        expansions = [q for q in logged if q.name in expanded and q.rcode == "NXDOMAIN"]
        # ndots:5 made glibc try every suffix, A and AAAA, for each of the three names.
        assert len(expansions) == 2 * len(SEARCH) * len(names), logged
        assert not any(q.tcp for q in logged)

        # The client stays alive until the agent has classified everything: the agent reads its
        # resolv.conf through /proc/<pid>/root.
        metrics = wait_for_value(watcher, len(expansions), EXPANSION_QUERIES, **pod.labels)
    metrics = expect_requests(watcher, logged, pod.labels)
    assert metrics.value(EXPANSION_QUERIES, **pod.labels) == len(expansions)
    spent = metrics.value(EXPANSION_SECONDS, **pod.labels)
    all_latency = metrics.value(DURATION + "_sum", **pod.labels)
    # Expansion time is part of all DNS time; A and AAAA run in parallel, so at most twice the
    # client's own wall time.
    assert 0 < spent <= all_latency, dns_samples(metrics)
    assert spent <= 2 * client.seconds, (spent, client.seconds)
    assert_clean(metrics)


def test_a_container_that_exited_is_analysed_with_its_pods_resolv_conf(pod, servers, dns_agent,
                                                                        processes, tmp_path):
    """A Job-like container resolves once and exits before the agent reads anything (the agent
    is stopped meanwhile, as a busy or throttled agent would be): its resolv.conf is learnt per
    pod, from another process of the pod (the sandbox, a sibling cgroup), so its search-list
    expansions still count. (Its cgroup is still there here; one removed before the agent runs
    again is tests/scenarios/test_runtime.py's expected failure.)"""
    dnsmasq = servers(Dnsmasq, tmp_path / "dnsmasq", [DNSMASQ_V4], [
        "--address=/batch.example.com/192.0.2.11", "--local=/example.com/",
        "--local=/cluster.local/"])
    watcher = dns_agent()
    conf_text = KUBE_RESOLV_CONF.format(ns=DNSMASQ_V4)
    conf = tmp_path / "pod-resolv.conf"
    conf.write_text(conf_text)
    sandbox_cgroup = pod.path.parent / f"cri-containerd-{os.urandom(32).hex()}.scope"
    sandbox_cgroup.mkdir()
    sandbox = processes.spawn(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
         'mount --bind "$1" /etc/resolv.conf && exec sleep 600', "sh", str(conf)],
        sandbox_cgroup)

    def sandbox_ready():
        try:
            return Path(f"/proc/{sandbox.pid}/root/etc/resolv.conf").read_text() == conf_text \
                and Path(f"/proc/{sandbox.pid}/comm").read_text().strip() == "sleep"
        except OSError:
            return False

    wait_for(sandbox_ready, 10, what="the sandbox with the pod's resolv.conf")
    os.kill(watcher.proc.pid, signal.SIGSTOP)
    try:
        with lookup(processes, pod, tmp_path / "job", conf_text, ["batch.example.com"]) as job:
            assert job.results["batch.example.com"] == ["192.0.2.11"]
        logged = dnsmasq.wait_answered(1)
        assert (pod.path / "cgroup.procs").read_text() == "", "the job's process is gone"
    finally:
        os.kill(watcher.proc.pid, signal.SIGCONT)
    expanded = {f"batch.example.com.{suffix}" for suffix in SEARCH}
    expansions = [q for q in logged if q.name in expanded and q.rcode == "NXDOMAIN"]
    assert len(expansions) == 2 * len(SEARCH), logged
    expect_requests(watcher, logged, pod.labels)
    metrics = wait_for_value(watcher, len(expansions), EXPANSION_QUERIES, **pod.labels)
    assert metrics.value(EXPANSION_QUERIES, **pod.labels) == len(expansions)
    sandbox.kill()
    sandbox.wait(timeout=10)


# --- 2. latency --------------------------------------------------------------------------------


def test_latency_of_a_slow_upstream_lands_in_its_bucket(cgroups, servers, dns_agent, processes,
                                                        tmp_path):
    pod = cgroups.plain()  # not kubelet-shaped: labelled by its path, container=""
    upstream = servers(UdpDnsServer, SLOW_UPSTREAM, 5300, delay=0.3)
    dnsmasq = servers(Dnsmasq, tmp_path / "dnsmasq", [DNSMASQ_V4],
                      [f"--server=/slow.test/{SLOW_UPSTREAM}#{upstream.port}"])
    watcher = dns_agent()

    with lookup(processes, pod, tmp_path / "client", f"nameserver {DNSMASQ_V4}\n",
                ["www.slow.test."]) as client:
        assert client.results["www.slow.test."] == ["192.0.2.20"]
    logged = dnsmasq.wait_answered(1)
    # Every query went through the slow upstream (dnsmasq answered nothing from elsewhere).
    assert sorted(q.qtype for q in logged) == sorted(q[2] for q in upstream.queries())

    metrics = expect_requests(watcher, logged, pod.labels)
    for qtype, n in collections.Counter(q.qtype for q in logged).items():
        labels = dict(pod.labels, qtype=qtype)
        metrics = wait_for_value(watcher, n, DURATION + "_count", **labels)
        assert metrics.bucket(DURATION, 0.25, **labels) == 0, dns_samples(metrics)
        assert metrics.bucket(DURATION, 0.5, **labels) == n, dns_samples(metrics)
    assert_clean(metrics)


# --- 3. TCP after truncation -------------------------------------------------------------------


def test_truncated_answer_and_tcp_retry(pod, servers, dns_agent, processes, tmp_path):
    # 40 A records (≈ 690 bytes) cannot fit glibc's 512-byte UDP answer: TC set, retry over TCP.
    records = [f"10.0.0.{i}" for i in range(1, 41)]
    dnsmasq = servers(Dnsmasq, tmp_path / "dnsmasq", [DNSMASQ_V4],
                      [f"--host-record=big.example.com,{address}" for address in records])
    watcher = dns_agent()

    with lookup(processes, pod, tmp_path / "client", f"nameserver {DNSMASQ_V4}\n",
                ["big.example.com."], family="inet") as client:
        assert sorted(client.results["big.example.com."]) == sorted(records)
    logged = dnsmasq.wait_answered(2)
    udp, tcp = [q for q in logged if not q.tcp], [q for q in logged if q.tcp]
    # dnsmasq's log: one A over UDP (answered truncated), then the same A over TCP.
    assert [(q.qtype, q.rcode) for q in udp] == [("A", "NOERROR")], logged
    assert [(q.qtype, q.rcode) for q in tcp] == [("A", "NOERROR")], logged

    metrics = wait_for_value(watcher, len(udp), TRUNCATED, **pod.labels)
    metrics = expect_requests(watcher, logged, pod.labels)
    assert metrics.value(TRUNCATED, **pod.labels) == len(udp)
    assert_clean(metrics)


def test_parallel_a_and_aaaa_over_tcp(pod, servers, dns_agent, processes, tmp_path):
    # 40 A records overflow 512 bytes, the one AAAA does not. glibc sends A and AAAA in parallel
    # over UDP; on the truncated A it sends both again over one TCP connection, in a single
    # segment (one writev of two length-prefixed queries). It does the whole lookup twice,
    # because 40 addresses overflow getaddrinfo's first buffer: the log says how often.
    records = [f"10.0.0.{i}" for i in range(1, 41)]
    dnsmasq = servers(Dnsmasq, tmp_path / "dnsmasq", [DNSMASQ_V4],
                      [f"--host-record=big.example.com,{address}" for address in records]
                      + ["--host-record=big.example.com,2001:db8::1"])
    watcher = dns_agent("--dns-timeout", "1")

    with lookup(processes, pod, tmp_path / "client", f"nameserver {DNSMASQ_V4}\n",
                ["big.example.com."]) as client:
        assert sorted(client.results["big.example.com."]) == sorted(records + ["2001:db8::1"])
    logged = dnsmasq.wait_answered(4)
    udp = collections.Counter(q.qtype for q in logged if not q.tcp)
    tcp = collections.Counter(q.qtype for q in logged if q.tcp)
    assert tcp["A"] >= 1 and tcp["AAAA"] == tcp["A"], logged
    summary = f"dnsmasq logged UDP {dict(udp)}, TCP {dict(tcp)}"

    # Every logged query is accounted for exactly once: answered, or (a UDP answer that arrived
    # after glibc had closed that socket to go to TCP) a timeout.
    for qtype in ("A", "AAAA"):
        expected = udp[qtype] + tcp[qtype]
        last = {}

        def accounted():
            last["metrics"] = watcher.scrape()
            return last["metrics"].value(REQUESTS, qtype=qtype, **pod.labels)

        wait_for_count(accounted, expected, f"{qtype} queries accounted for", timeout=5,
                       explain=lambda: f"; {summary}; agent exported:\n"
                                       f"{dns_samples(last['metrics'])}")
        metrics = last["metrics"]
    # The answers glibc read: both A (UDP truncated, then TCP) and every AAAA over TCP.
    assert metrics.value(REQUESTS, qtype="A", rcode="NOERROR", **pod.labels) == \
        udp["A"] + tcp["A"], dns_samples(metrics)
    assert metrics.value(REQUESTS, qtype="AAAA", rcode="NOERROR", **pod.labels) >= tcp["AAAA"]
    assert metrics.value(TRUNCATED, **pod.labels) == udp["A"], dns_samples(metrics)
    assert_clean(metrics)


# --- 4. timeouts -------------------------------------------------------------------------------


def test_unanswered_query_counts_one_timeout_each(pod, servers, dns_agent, processes, tmp_path):
    sink = servers(UdpDnsServer, SINK, 53, drop=True)
    watcher = dns_agent("--dns-timeout", "1")

    with lookup(processes, pod, tmp_path / "client",
                f"nameserver {SINK}\noptions timeout:1 attempts:1\n",
                ["never.example."]) as client:
        assert client.results["never.example."].startswith("error")
    # One query is one socket and id: a retransmission (same port, same id) is not another.
    received = {(peer, ident): qtype for peer, ident, qtype, _ in sink.queries()}
    assert received, "the sink received nothing"
    expected = collections.Counter(received.values())

    metrics = None
    for qtype, n in expected.items():
        metrics = wait_for_value(watcher, n, REQUESTS, qtype=qtype, rcode="timeout", **pod.labels)
    # Counted once, never again: watch for two more timeout periods.
    settled = metrics.value(REQUESTS, **pod.labels)
    assert settled == len(received), dns_samples(metrics)
    deadline = time.monotonic() + 2.2
    while time.monotonic() < deadline:
        later = watcher.scrape()
        assert later.value(REQUESTS, **pod.labels) == settled, dns_samples(later)
        time.sleep(0.2)
    assert later.value(LOST) == 0, later.describe("credwatch_events_lost")


def burst_from(processes, pod, count, first_id, sockets):
    """count unanswered queries to the sink from the pod, ids first_id.., over `sockets` sockets
    in turn."""
    argv = [sys.executable, str(CLIENTS / "dns_burst.py"), "--host", BURST_SINK, "--port", "53",
            "--count", str(count), "--first-id", str(first_id), "--sockets", str(sockets)]
    proc = processes.spawn(argv, pod.path, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=CLIENT_DEADLINE)
    assert proc.returncode == 0 and int(out) == count


def test_full_pending_table_counts_refusals_and_recovers(pod, servers, dns_agent, processes):
    """More unanswered queries in flight than the kernel's pending table holds, from 64 sockets
    (one socket's queries only reach its region of the table, see the next test): every query is
    accounted for exactly once, either refused and counted (events lost, dns_pending_table_full:
    its bucket of four slots was full) or timed out; and once the timeouts have emptied the table
    new queries are recorded again."""
    capacity = 16_384  # agent_common::dns::PENDING_TABLE_SIZE
    sent = capacity + 300
    sink = servers(UdpDnsServer, BURST_SINK, 53, drop=True)
    # Long enough that no query of the burst times out (and frees its slot) while it is sent.
    watcher = dns_agent("--dns-timeout", "4")

    def lost(m):
        return m.value(LOST, reason="dns_pending_table_full")

    def timeouts(m):
        return m.value(REQUESTS, qtype="A", rcode="timeout", **pod.labels)

    last = {}

    def accounted():
        last["metrics"] = watcher.scrape()
        return timeouts(last["metrics"]) + lost(last["metrics"])

    burst_from(processes, pod, sent, 0, 64)
    wait_for_count(accounted, sent, "queries timed out or refused",
                   explain=lambda: last["metrics"].describe("credwatch_dns_requests"))
    metrics = last["metrics"]
    refused = lost(metrics)
    # At least the excess over the table's size is refused, and no more than fits is timed.
    assert refused >= sent - capacity and timeouts(metrics) <= capacity, metrics.describe()
    # Reclaimed: the same pod's next queries are recorded, and time out, with nothing lost.
    burst_from(processes, pod, 10, sent, 64)
    metrics = wait_for_value(watcher, sent - refused + 10, REQUESTS, qtype="A", rcode="timeout",
                             **pod.labels)
    assert lost(metrics) == refused
    assert sink.datagrams(), "the sink received the burst"
    assert watcher.proc.poll() is None and http_get(watcher.port, "/readyz")[0] == 200


def test_one_socket_holds_at_most_its_region_of_the_pending_table(pod, servers, dns_agent,
                                                                   processes):
    """A socket's queries take the 256 buckets of its region by the low 8 bits of their ids
    (agent_common::dns::pending_bucket), four slots each: 1,024 queries in flight. Ids 0..1,123
    from one socket: exactly the first 1,024 are recorded (and time out), exactly 100 refused."""
    per_socket = 256 * 4  # PENDING_SOCKET_BUCKETS × PENDING_WAYS
    servers(UdpDnsServer, BURST_SINK, 53, drop=True)
    watcher = dns_agent("--dns-timeout", "4")
    burst_from(processes, pod, per_socket + 100, 0, 1)
    metrics = wait_for_value(watcher, per_socket, REQUESTS, qtype="A", rcode="timeout",
                             **pod.labels)
    assert metrics.value(LOST, reason="dns_pending_table_full") == 100, metrics.describe()


# --- 5. IPv6 -----------------------------------------------------------------------------------


def test_ipv6_server_on_loopback(cgroups, servers, dns_agent, processes, tmp_path):
    pod = cgroups.cgroupfs_pod()
    dnsmasq = servers(Dnsmasq, tmp_path / "dnsmasq", ["::1"], [
        "--address=/v6.example.com/192.0.2.30", "--address=/v6.example.com/2001:db8::30"])
    watcher = dns_agent()

    with lookup(processes, pod, tmp_path / "client", "nameserver ::1\n",
                ["v6.example.com."]) as client:
        assert client.results["v6.example.com."] == ["192.0.2.30", "2001:db8::30"]
    logged = dnsmasq.wait_answered(2)
    assert {q.client for q in logged} == {"::1"}, logged
    assert sorted(q.qtype for q in logged) == ["A", "AAAA"]

    metrics = expect_requests(watcher, logged, pod.labels)
    assert_clean(metrics)


# --- 6. opt-in top names -----------------------------------------------------------------------


def test_top_names_are_capped_and_opt_in(pod, servers, dns_agent, processes, tmp_path):
    dnsmasq = servers(Dnsmasq, tmp_path / "dnsmasq", [DNSMASQ_V4], [
        "--address=/example.com/192.0.2.40", "--address=/example.com/2001:db8::40"])
    capped = dns_agent("--dns-top-names", "2")
    default = dns_agent()
    names = ["one.example.com.", "two.example.com.", "three.example.com.", "four.example.com."]

    with lookup(processes, pod, tmp_path / "client", f"nameserver {DNSMASQ_V4}\n",
                names) as client:
        assert all(isinstance(r, list) for r in client.results.values()), client.results
    logged = dnsmasq.wait_answered(len(names))
    per_name = collections.Counter(q.name for q in logged)
    first = list(dict.fromkeys(q.name for q in logged))[:2]  # in the order they were queried
    assert first == ["one.example.com", "two.example.com"]

    for name in first:
        wait_for_value(capped, per_name[name], NAMES, name=name, **pod.labels)
    other = sum(n for name, n in per_name.items() if name not in first)
    metrics = wait_for_value(capped, other, NAMES, name="~other", **pod.labels)
    shown = {dict(labels)["name"] for labels in metrics.select(NAMES, **pod.labels)}
    assert shown == {*first, "~other"}, metrics.describe("credwatch_dns_name")

    # Without the flag: the same traffic is counted, but no name ever becomes a label.
    metrics = expect_requests(default, logged, pod.labels)
    assert not metrics.select(NAMES), metrics.describe("credwatch_dns_name")
    assert_clean(metrics)


# --- 7. malformed input ------------------------------------------------------------------------

QUESTION_TAIL = b"\x00\x01\x00\x01"  # qtype A, class IN
LONGEST_NAME = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 255 bytes on the wire

BAD_DATAGRAMS = [
    # (expected reason, what it is, payload)
    ("compression_pointer", "pointer loop: the question points at itself",
     dnsserver.header(0x5001) + b"\xc0\x0c" + QUESTION_TAIL),
    ("compression_pointer", "label, then a pointer back to it",
     dnsserver.header(0x5002) + b"\x03api\xc0\x0c" + QUESTION_TAIL),
    ("label_too_long", "64-byte label",
     dnsserver.header(0x5003) + b"\x40" + b"a" * 64 + b"\x00" + QUESTION_TAIL),
    ("name", "name of 257 bytes (4 labels of 63)",
     dnsserver.header(0x5004) + (b"\x3f" + b"n" * 63) * 4 + b"\x00" + QUESTION_TAIL),
    ("name", "name running past the end of the datagram",
     dnsserver.header(0x5005) + b"\x05ab"),
    ("qdcount", "qdcount 0", dnsserver.header(0x5006, qd=0)),
    ("qdcount", "qdcount 2", dnsserver.header(0x5007, qd=2) + dnsserver.question("a.test")
     + dnsserver.question("b.test")),
    ("header", "truncated header (5 bytes)", dnsserver.header(0x5008)[:5]),
    # Not DNS at all: a TLS ClientHello's first bytes read as a header claim 165 questions.
    ("qdcount", "garbage (TLS ClientHello)",
     bytes.fromhex("16030100a5010000a10303") + bytes(range(7, 250, 5))),
]


def test_malformed_queries_are_counted_and_passed_through(pod, servers, dns_agent, processes):
    sink = servers(UdpDnsServer, RAW_SINK, 53, drop=True)
    watcher = dns_agent("--dns-timeout", "1", "--dns-top-names", "4")
    client = processes.spawn(
        [sys.executable, str(CLIENTS / "dns_raw.py"), "--host", RAW_SINK, "--port", "53"],
        pod.path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def send(payload: bytes) -> None:
        client.stdin.write(payload.hex() + "\n")
        client.stdin.flush()
        ready, _, _ = select.select([client.stdout], [], [], CLIENT_DEADLINE)
        assert ready and client.stdout.readline() == f"sent {len(payload)}\n"

    def by_reason():
        return {dict(labels)["reason"]: value
                for labels, value in watcher.scrape().select(MALFORMED).items()}

    # The kernel counts while the datagram is being sent: no need to wait long for it.
    sent, wrong = [], []
    for reason, what, payload in BAD_DATAGRAMS:
        before = by_reason()
        send(payload)
        sent.append(payload)
        try:
            after = wait_for(lambda: (now := by_reason())[reason] > before[reason] and now,
                             timeout=2, what=f"{MALFORMED}{{reason={reason}}} for {what}")
        except AssertionError as err:
            wrong.append(f"{what}: {err}; counters {before} -> {by_reason()}")
            continue
        delta = {r: after[r] - before[r] for r in after if after[r] != before[r]}
        if delta != {reason: 1}:
            wrong.append(f"{what}: expected {{{reason!r}: 1}}, counted {delta}")

    # The limits themselves are valid: a 63-byte label in a 255-byte name is a query like any
    # other, never answered by the sink, so a timeout. (Names are exported from answers; that a
    # 255-byte name crosses whole is checked by the BPF_PROG_TEST_RUN and unit tests.)
    before = by_reason()
    send(dnsserver.query(0x5100, LONGEST_NAME))
    sent.append(dnsserver.query(0x5100, LONGEST_NAME))
    metrics = wait_for_value(watcher, 1, REQUESTS, qtype="A", rcode="timeout", **pod.labels)
    assert by_reason() == before, "a valid 255-byte name was counted as malformed"

    client.stdin.close()
    assert client.wait(timeout=10) == 0
    # Traffic never altered: the sink got every datagram, byte for byte, in order.
    wait_for(lambda: len(sink.datagrams()) >= len(sent), timeout=5, what="all datagrams at sink")
    assert [d.data for d in sink.datagrams()] == sent
    assert watcher.proc.poll() is None, "agent died"
    assert http_get(watcher.port, "/readyz")[0] == 200
    assert metrics.value(LOST) == 0, metrics.describe("credwatch_events_lost")
    assert not wrong, "\n".join(wrong)
