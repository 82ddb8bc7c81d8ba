"""Secrets: credential documents with canary secrets pass the agent at its most verbose log level;
no canary may appear in what it writes (stdout, stderr, /metrics) nor anywhere in its memory,
which includes the ring buffers the kernel fills (they are mapped into the agent). And the
agent's process hardening (no core dumps, not dumpable) must not cost it the pods' resolv.conf.
"""

import os
import socket
import struct
import subprocess
import sys
import threading
import uuid

from harness import CLIENTS, credserver, wait_for_value
from test_metadata import credentials_request, run_botocore, run_java, run_raw

CredentialServer, ApiServer, ROLE = credserver.CredentialServer, credserver.ApiServer, credserver.ROLE
FETCHES = "credwatch_credential_fetches_total"
REJECTS = "credwatch_parse_rejects_total"


def memory_of(pid: int):
    """(mapping line, bytes) for every readable mapping of the process. Needs root."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps.read().splitlines():
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if "r" not in fields[1] or line.endswith(("[vvar]", "[vsyscall]", "[vvar_vclock]")):
                continue
            try:
                mem.seek(start)
                yield line, mem.read(end - start)
            except OSError:
                continue  # e.g. a guard page


def needles(canary: str) -> list[bytes]:
    """The canary as text in either case and as hex, the ways a leak would show up."""
    return [canary.encode(), canary.lower().encode(), canary.encode().hex().encode()]


def test_no_secret_reaches_the_agent(pod, servers, agent, processes):
    imds = servers(CredentialServer, lifetime=900)
    split = servers(CredentialServer, "::1", lifetime=900, split=True)
    ecs = servers(CredentialServer, lifetime=840)
    pod_identity = servers(CredentialServer, "::1")
    # The kernel reads these documents to the end looking for Expiration: error paths too.
    malformed = servers(CredentialServer, expiration="malformed")
    missing = servers(CredentialServer, expiration="missing")
    api = servers(ApiServer)
    credential_servers = (imds, split, ecs, pod_identity, malformed, missing)
    watcher = agent(*credential_servers, log_level="trace")

    run_java(processes, pod, imds, api, 5, imdsv2=True)
    run_java(processes, pod, split, api, 5)
    ecs_fetches = run_botocore(processes, pod, ecs, api, 3)
    run_raw(processes, pod, pod_identity,
            credentials_request("/v1/credentials", b"Authorization: pod-identity-token\r\n"))
    for server in (malformed, missing):
        run_raw(processes, pod, server, credentials_request())

    # The agent must have seen all of these documents, or this test would prove nothing.
    wait_for_value(watcher, 10 + 2, FETCHES, role=ROLE, **pod.labels)
    wait_for_value(watcher, ecs_fetches, FETCHES, role="ecs-task", **pod.labels)
    wait_for_value(watcher, 1, FETCHES, role="pod-identity", **pod.labels)
    wait_for_value(watcher, 1, REJECTS, reason="bad_timestamp")

    secrets = [n for server in credential_servers for n in needles(server.canary)]
    role_in_rings = False
    scanned = 0
    for mapping, data in memory_of(watcher.proc.pid):
        scanned += len(data)
        for needle in secrets:
            assert needle not in data, f"credential secret in the agent's memory: {mapping}"
        role_in_rings |= "bpf" in mapping and ROLE.encode() in data
    # Positive control: the scan read the mapped ring buffers (events there carry the role).
    assert role_in_rings, "the ring buffers were not scanned"
    assert scanned > 1 << 20

    outputs = {"/metrics": watcher.metrics_text()}
    assert watcher.stop() == 0, "SIGTERM should shut the agent down cleanly"
    outputs.update(stdout=watcher.stdout(), stderr=watcher.stderr())
    assert "TRACE" in outputs["stderr"] or "DEBUG" in outputs["stderr"], "not the verbose level"
    for where, text in outputs.items():
        for needle in secrets:
            assert needle.decode().lower() not in text.lower(), f"credential secret in {where}"


def test_core_dumps_are_off(pod, agent):
    watcher = agent()
    limits = open(f"/proc/{watcher.proc.pid}/limits").read()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core


class DnsServer:
    """Loopback UDP DNS: NXDOMAIN for names under cluster.local, else NOERROR without answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.names: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                query, peer = self.sock.recvfrom(512)
            except OSError:
                return
            labels, pos = [], 12
            while pos < len(query) and query[pos]:
                labels.append(query[pos + 1:pos + 1 + query[pos]].decode(errors="replace"))
                pos += query[pos] + 1
            name = ".".join(labels).lower()
            self.names.append(name)
            rcode = 3 if name.endswith("cluster.local") else 0
            header = struct.pack("!HHHHHH", int.from_bytes(query[:2], "big"), 0x8180 | rcode, 1,
                                 0, 0, 0)
            self.sock.sendto(header + query[12:pos + 5], peer)

    def close(self):
        self.sock.close()


def test_non_dumpable_agent_reads_the_pods_own_resolv_conf(pod, agent, processes, tmp_path):
    """The agent reads /proc/<pid>/root/etc/resolv.conf of a process in the pod: here one in a
    mount namespace of its own with a search list the host does not have. Only with that file
    are the NXDOMAIN answers recognised as search-list expansion."""
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    search = [f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"search {' '.join(search)}\nnameserver 127.0.0.1\noptions ndots:5\n")
    dns = DnsServer()
    try:
        watcher = agent(extra_args=("--dns-port", str(dns.port)))
        names = [f"api.example.com.{suffix}" for suffix in search] + ["api.example.com"]
        # Private mount namespace (gone with the process): only this process sees the file.
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(conf), sys.executable,
                str(CLIENTS / "dns_queries.py"), "--server", "127.0.0.1", "--port", str(dns.port),
                *names]
        client = processes.spawn(argv, pod.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        out, err = client.communicate(timeout=30)
        assert client.returncode == 0, err
        assert '"rcodes": [3, 3, 3, 0]' in out, out
        wait_for_value(watcher, len(names), "credwatch_dns_requests_total", **pod.labels)
        wait_for_value(watcher, len(search), "credwatch_dns_search_expansion_queries_total",
                       **pod.labels)
        assert search[0] not in open("/etc/resolv.conf").read(), "the host must not have it"
    finally:
        dns.close()
