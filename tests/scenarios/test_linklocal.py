"""The link-local packet budget: from pod cgroups, known numbers of packets to stand-ins for IMDS
(TCP, HTTP), the Amazon DNS resolver (UDP) and time sync (UDP), declared to the agent with
--metadata-endpoint imds=…, --vpc-resolver and --ntp-endpoint; credwatch must count them exactly,
per workload and service, and observe each second's node total once in the per-second histogram.

Every client and stand-in runs inside a network namespace this test creates (netlab), on its
loopback; the stand-ins stay outside the watched cgroup subtree. Every packet sent to a stand-in
is counted independently by an nftables counter on that namespace's output hook (TCP decides how
many packets an exchange takes; for UDP it must also be what the clients sent and the sinks
received): credwatch's figures are compared with those counters, not with what the test meant to
send.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from harness import CLIENTS, SETTLE_SECONDS, remove_tree, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import netlab  # noqa: E402

PACKETS = "credwatch_linklocal_packets_total"
PER_SECOND = "credwatch_linklocal_packets_per_second"
SERVICE_PER_SECOND = "credwatch_linklocal_service_packets_per_second"
ENTRIES = "credwatch_linklocal_table_entries"
LOST = "credwatch_events_lost_total"
TRAFFIC = CLIENTS / "linklocal_traffic.py"
CREDSERVER = netlab.FIXTURES / "credserver.py"
BOUNDS = (0.0, 64.0, 128.0, 256.0, 512.0, 768.0, 819.2, 896.0, 1024.0, 1536.0, 2048.0, 4096.0)


class StandIns:
    """A namespace with a fake IMDS (credserver.py) and two UDP sinks on its loopback, and an
    nftables counter per stand-in of the packets sent to it."""

    def __init__(self, lab: netlab.Lab):
        self.lab = lab
        self.ns = lab.netns("ll")
        imds = lab.spawn([sys.executable, CREDSERVER, "--host", "127.0.0.1", "--port", "0"],
                         netns=self.ns)
        self.imds_port = int(self._ready(imds)[0])
        self.sinks = lab.spawn([sys.executable, TRAFFIC, "sink"], netns=self.ns)
        self.dns_port, self.ntp_port = map(int, self._ready(self.sinks))
        self.ns.nft(
            "table inet credwatch_test {\n"
            "  counter imds {}\n"
            "  counter dns {}\n"
            "  counter ntp {}\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n"
            f"    ip daddr 127.0.0.1 tcp dport {self.imds_port} counter name imds\n"
            f"    ip daddr 127.0.0.1 udp dport {self.dns_port} counter name dns\n"
            f"    ip daddr 127.0.0.1 udp dport {self.ntp_port} counter name ntp\n"
            "  }\n"
            "}\n")

    @staticmethod
    def _ready(proc) -> list[str]:
        words = proc.stdout.readline().split()
        assert words and words[0] == "READY", f"no READY line: {words} {proc.stderr.read()[-2000:]}"
        return words[1:]

    def agent_args(self) -> tuple[str, ...]:
        return ("--no-default-endpoints",
                "--metadata-endpoint", f"imds=127.0.0.1:{self.imds_port}",
                "--vpc-resolver", f"127.0.0.1:{self.dns_port}",
                "--ntp-endpoint", f"127.0.0.1:{self.ntp_port}")

    def packets(self) -> dict[str, int]:
        """Packets sent to each stand-in so far, by nftables' counters."""
        listing = json.loads(netlab.run(*self.ns.exec_argv(["nft", "-j", "list", "counters"])))
        counters = {item["counter"]["name"]: item["counter"]["packets"]
                    for item in listing["nftables"] if "counter" in item}
        assert set(counters) == {"imds", "dns", "ntp"}, listing
        return counters

    def client(self, cgroup, *args) -> dict:
        proc = self.lab.spawn([sys.executable, TRAFFIC, *map(str, args)], cgroup.path,
                              netns=self.ns)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"linklocal_traffic.py {args} exited {proc.returncode}: {err}"
        return json.loads(out.strip().splitlines()[-1])

    def sink_counts(self) -> dict:
        self.sinks.send_signal(signal.SIGTERM)
        out, _ = self.sinks.communicate(timeout=10)
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def stand_ins(processes):
    missing = netlab.missing_tools()
    if missing:
        pytest.fail(f"missing {missing}: scripts/setup.sh installs iproute2 and nftables")
    lab = netlab.Lab(processes)
    try:
        yield StandIns(lab)
    finally:
        lab.close()


def linklocal_series(metrics, pod: str) -> dict[str, float]:
    return {dict(labels)["linklocal_service"]: value
            for labels, value in metrics.select(PACKETS, pod=pod).items()}


def test_per_workload_counts_are_exact_per_service(agent, cgroups, stand_ins):
    a, b = cgroups.systemd_pod(), cgroups.cgroupfs_pod()
    running = agent(extra_args=stand_ins.agent_args())
    calls = stand_ins.client(a, "http", "127.0.0.1", stand_ins.imds_port, 5)
    assert calls == {"calls": 5, "ok": 5}
    stand_ins.client(a, "udp", "127.0.0.1", stand_ins.dns_port, 7, "dns")
    stand_ins.client(b, "udp", "127.0.0.1", stand_ins.ntp_port, 11, "ntp")
    sent = stand_ins.packets()
    imds_packets = sent["imds"]
    # A TCP exchange takes several packets each way; at least SYN, request, FIN per call.
    assert imds_packets >= 15, imds_packets
    # One datagram is one packet: sent, counted on the way out, received.
    assert (sent["dns"], sent["ntp"]) == (7, 11), sent
    assert stand_ins.sink_counts() == {"dns": 7, "ntp": 11}
    expected = {a.pod: {"imds": imds_packets, "amazon_dns": 7}, b.pod: {"ntp": 11}}
    metrics = settle(running,
                     lambda m: {pod: linklocal_series(m, pod) for pod in expected} == expected,
                     f"exact link-local counts {expected}")
    for labels in metrics.select(PACKETS, pod=a.pod):
        assert dict(labels)["container"] == a.container, labels
    assert metrics.value(LOST, reason="linklocal_table_full") == 0

    # The node totals hold every packet once, in the service's histogram too.
    total = imds_packets + 7 + 11
    metrics = settle(running, lambda m: m.value(PER_SECOND + "_sum") == total,
                     f"{PER_SECOND}_sum == {total}")
    for service, n in (("imds", imds_packets), ("amazon_dns", 7), ("ntp", 11), ("other", 0)):
        assert metrics.value(SERVICE_PER_SECOND + "_sum", linklocal_service=service) == n, service

    # A vanished cgroup's kernel entries go: pod a held two (imds, amazon_dns), b one.
    assert metrics.value(ENTRIES) == 3
    remove_tree(a.path)
    wait_for(lambda: running.scrape().value(ENTRIES) == 1, what=f"{ENTRIES} == 1 after rmdir")


def settle(running, check, what: str):
    """Scrapes until `check(metrics)` holds, then requires it to hold again SETTLE_SECONDS later
    (a count that goes past its figure late is an over-count, as harness.wait_for_count has it);
    returns that later scrape. Fails with the link-local series otherwise."""
    last = {}

    def ok():
        last["m"] = running.scrape()
        return last["m"] if check(last["m"]) else None

    def explain():
        return f"; agent exported:\n{last['m'].describe('credwatch_linklocal')}"

    try:
        wait_for(ok, what=what)
    except AssertionError as err:
        raise AssertionError(f"{err}{explain()}") from None
    time.sleep(SETTLE_SECONDS)
    assert ok(), f"{what} held, and no longer {SETTLE_SECONDS} s later (a late over-count){explain()}"
    return last["m"]


def expected_buckets(per_second: list[int]) -> dict[float, int]:
    """Cumulative bucket counts for one observation per second."""
    return {le: sum(1 for n in per_second if n <= le) for le in BOUNDS}


def observe_burst(agent, cgroups, stand_ins, counts: list[int]) -> None:
    """Sends `counts` packets right after consecutive second boundaries from a pod and checks
    the per-second histogram against the seconds the client saw its packets leave in."""
    pod = cgroups.systemd_pod()
    running = agent(extra_args=stand_ins.agent_args())
    before = running.scrape()
    ntp_before = stand_ins.packets()["ntp"]
    report = stand_ins.client(pod, "burst", "127.0.0.1", stand_ins.ntp_port, *counts)
    seen = dict(report["seconds"])
    # A send straddling a second boundary (its two clock reads disagree) is not guessed; the
    # bursts start right after a boundary, so that takes a stall of most of a second.
    assert report["ambiguous"] == [], report
    assert sum(seen.values()) == sum(counts), report
    # What left, by nftables' count: the figure credwatch must match.
    total = stand_ins.packets()["ntp"] - ntp_before
    assert total == sum(counts), (total, counts)

    # The readiness signal: every packet sent has been observed in a completed second.
    after = settle(running,
                   lambda m: m.value(PER_SECOND + "_sum") - before.value(PER_SECOND + "_sum") == total,
                   f"{total} packets in {PER_SECOND}_sum")
    got = {le: after.bucket(PER_SECOND, le) - before.bucket(PER_SECOND, le) for le in BOUNDS}
    quiet = (after.value(PER_SECOND + "_count") - before.value(PER_SECOND + "_count")
             - len(seen))
    # Every other second between the scrapes was quiet (bucket 0); the burst's seconds sit in
    # the buckets their counts call for.
    want = {le: n + quiet for le, n in expected_buckets(list(seen.values())).items()}
    assert got == want, f"seconds {seen}: buckets {got}, expected {want}"
    service = {le: after.bucket(SERVICE_PER_SECOND, le, linklocal_service="ntp")
               - before.bucket(SERVICE_PER_SECOND, le, linklocal_service="ntp") for le in BOUNDS}
    assert service == want, f"ntp: {service}, expected {want}"
    assert after.value(LOST, reason="linklocal_table_full") == 0


def test_a_bursts_second_lands_in_its_bucket(agent, cgroups, stand_ins):
    # 900 packets in one second: above 80 % of the 1024 allowance, so in (896, 1024].
    observe_burst(agent, cgroups, stand_ins, [900])


def test_a_burst_over_two_seconds_is_two_observations(agent, cgroups, stand_ins):
    # 300 then 600, each right after a boundary: (256, 512] and (512, 768], never one 900.
    observe_burst(agent, cgroups, stand_ins, [300, 600])
