"""The metrics port under hostile clients, dual-stack listening and JSON logs (issue 20 items 7
and 9).

Any pod can reach the agent's pod IP on 9500. One client address (127.0.0.2 here, a pod) floods
the port with idle connections (no byte sent) and slow ones (a request header that never ends),
reconnecting as fast as it is closed (up to 2,000 open at once on its side), while a scraper from another
address (127.0.0.1 and ::1: the agent listens on [::], dual-stack) scrapes: every scrape must
get its 200 and a complete body within the scrape's own timeout (Prometheus' default, 10 s), and
the agent's file descriptors and memory stay bounded while the flood lasts.

The agent runs with `--log-format json`: every line it writes is one JSON object.

Safety: loopback only; the agent watches the session's test cgroup subtree.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from pathlib import Path

from harness import agent_binary, credserver, free_port, wait_for

# agent/src/http.rs
MAX_PER_CLIENT = 8
MAX_CONNECTIONS = 64
FLOOD_CONNECTIONS = 2000
FLOOD_SOURCE = "127.0.0.2"
SCRAPE_TIMEOUT = 10  # Prometheus' default scrape_timeout
SCRAPES = 20
# What the agent may allocate while the flood lasts, beyond what it held before: the connections
# it serves hold at most 8 KiB of request each; the rest is allocator slack.
RSS_GROWTH_BOUND = 8 * 1024 * 1024


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def scrape(host: str, port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=SCRAPE_TIMEOUT)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


class Flood:
    """Connections from FLOOD_SOURCE, half idle and half slow, each held open until the agent
    closes it or the flood ends: up to FLOOD_CONNECTIONS open at once, one reopened as soon as
    the agent closes one, until the flood is stopped."""

    def __init__(self, port: int):
        self.port = port
        self.opened = 0
        self.closed_by_agent = 0
        self.refused_connects = 0
        self.stop = threading.Event()
        self.open: list[socket.socket] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(SCRAPE_TIMEOUT)
        try:
            sock.bind((FLOOD_SOURCE, 0))
            sock.connect(("127.0.0.1", self.port))
        except OSError:
            self.refused_connects += 1
            sock.close()
            return None
        if self.opened % 2:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        self.opened += 1
        sock.setblocking(False)
        return sock

    def reap(self) -> None:
        """Closes the flood's side of connections the agent has closed."""
        still = []
        for sock in self.open:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                still.append(sock)
                continue
            except OSError:
                data = b""
            assert data == b"", f"the agent answered a request that never ended: {data[:200]!r}"
            self.closed_by_agent += 1
            sock.close()
        self.open = still

    def run(self) -> None:
        while not self.stop.is_set():
            if len(self.open) < FLOOD_CONNECTIONS:
                sock = self.connect()
                if sock is not None:
                    self.open.append(sock)
            if len(self.open) >= 64:
                self.reap()
            if len(self.open) >= FLOOD_CONNECTIONS:
                self.stop.wait(0.01)  # pacing: all held, wait for the agent to close some

    def start(self) -> Flood:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        for sock in self.open:
            sock.close()


def test_a_flood_from_one_address_does_not_blind_the_scrapers(cgroups, processes, servers,
                                                              tmp_path):
    imds = servers(credserver.CredentialServer, "127.0.0.1", lifetime=21600)
    port = free_port()
    stderr = tmp_path / "agent.stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDWATCH_")}
    with open(stderr, "wb") as err:
        proc = processes.spawn(
            [str(agent_binary()), "--log-format", "json", "--log-level", "debug", "run",
             "--cgroup-path", str(cgroups.root), "--no-default-endpoints",
             "--metadata-endpoint", imds.endpoint, "--listen", f"[::]:{port}"],
            stdout=err, stderr=err, env=env)

    def ready():
        if proc.poll() is not None:
            raise AssertionError(stderr.read_text()[-3000:])
        try:
            return scrape("127.0.0.1", port)[0] == 200
        except OSError:
            return False

    wait_for(ready, 30, interval=0.1, what="agent ready")
    # Dual-stack: the default-style [::] listener serves IPv4 and IPv6 clients alike.
    for host in ("127.0.0.1", "::1"):
        status, body = scrape(host, port)
        assert status == 200 and "credwatch_build_info" in body, (host, status)
    fds_before, rss_before = fds(proc.pid), rss(proc.pid)

    flood = Flood(port).start()
    results, most_fds, most_rss = [], fds_before, rss_before
    try:
        # Wait until the flood is established: the agent has closed connections beyond the
        # client's share (so the share is full) before the first scrape.
        wait_for(lambda: flood.closed_by_agent > MAX_PER_CLIENT or not flood.thread.is_alive(),
                 30, interval=0.05, what="the flood filling its share")
        for i in range(SCRAPES):
            results.append(scrape("::1" if i % 2 else "127.0.0.1", port))
            most_fds = max(most_fds, fds(proc.pid))
            most_rss = max(most_rss, rss(proc.pid))
        flood_alive = flood.thread.is_alive()
    finally:
        flood.close()
    print(f"\nflood: {flood.opened} connections opened from {FLOOD_SOURCE}, {flood.closed_by_agent} "
          f"closed by the agent, {flood.refused_connects} connects refused; {len(results)} scrapes "
          f"during it, all {sorted({s for s, _ in results})}; agent fds {fds_before} -> at most "
          f"{most_fds}, RSS {rss_before // 1024} KiB -> at most {most_rss // 1024} KiB")
    assert flood_alive, "the flood thread died"
    assert [status for status, _ in results] == [200] * SCRAPES
    assert all("credwatch_build_info" in body for _, body in results)
    # The flood was refused beyond its share, not served.
    assert flood.closed_by_agent > MAX_PER_CLIENT
    # Bounded: the client's share of sockets and one scrape; no growth with the flood's size.
    # (+2: the scrape's own connection, and one flood connection between accept and close.)
    assert most_fds <= fds_before + MAX_PER_CLIENT + 2, (fds_before, most_fds)
    assert most_rss - rss_before <= RSS_GROWTH_BOUND, (rss_before, most_rss)
    assert proc.poll() is None

    # JSON logs: every line one object with the four fields; the refusals were logged (debug).
    proc.terminate()
    assert proc.wait(timeout=15) == 0
    lines = stderr.read_text().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]
    assert all(set(r) == {"time", "level", "target", "message"} for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("ready: metrics on http://[::]:") for m in messages), messages[:20]
    assert any(f"metrics connections open from {FLOOD_SOURCE}" in m for m in messages)
    assert not [r for r in records if r["level"] == "error"]
