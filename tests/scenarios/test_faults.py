"""Fault scenarios: the agent killed mid-storm, restarted, refused its metrics port, and a watched
cgroup deleted with traffic in flight. In every case the workload's traffic is undisturbed.

The agent's own BPF objects are identified by the descriptors it holds (/proc/<pid>/fdinfo gives
prog_id, link_id and map_id), not by name: other credwatch instances may be running on this
machine with the same program names.
"""

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

from harness import (CLIENT_TIMEOUT, CLIENTS, REPO, agent_binary, credserver, http_get, wait_for,
                     wait_for_value)

CredentialServer, ApiServer, ROLE = credserver.CredentialServer, credserver.ApiServer, credserver.ROLE

FETCHES = "credwatch_credential_fetches_total"
STORM = "credwatch_credential_refresh_storm"
KILL_TIMEOUT = 10


def program_names() -> set[str]:
    """The program names agent-common declares (names.rs is the single source; the benchmarks'
    empty programs are not in its object)."""
    text = (REPO / "agent-common/src/names.rs").read_text()
    return set(re.findall(r'pub const PROG_\w+: &str = "(\w+)";', text))


def attached_names(agent) -> set[str]:
    """What `credwatch run` holds and attaches on this kernel: every program, but connect4 and
    connect6 only where sock_ops may not read the cgroup (accept attribution 0; where it may,
    sock_ops records connects and the agent does not load them, agent-ebpf/src/tcp.rs)."""
    metrics = agent.scrape()
    names = program_names()
    if metrics.value("credwatch_kernel_feature", feature="accept_attribution") == 1:
        names -= {"cw_connect4", "cw_connect6"}
    exported = {dict(labels)["program"] for labels, value
                in metrics.select("credwatch_program_attached").items() if value == 1}
    assert exported == names, (exported, names)
    return names


def bpf_objects(pid: int) -> dict[str, set[int]]:
    """The ids of the BPF programs, links and maps process `pid` holds descriptors for."""
    held = {"prog": set(), "link": set(), "map": set()}
    fdinfo = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            with open(f"{fdinfo}/{fd}") as f:
                fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except OSError:
            continue  # closed meanwhile
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        # A link's fdinfo also names its program: classify by the most specific id.
        for kind in ("link", "prog", "map"):
            if f"{kind}_id" in fields:
                held[kind].add(int(fields[f"{kind}_id"]))
                break
    return held


def bpftool(*args) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True)
    # bpftool 7.1 prints a bare newline instead of [] for an empty `cgroup show`.
    return json.loads(out.stdout.strip() or "[]")


def existing(kind: str, ids: set[int]) -> set[int]:
    return {obj["id"] for obj in bpftool(kind, "show")} & ids


def spawn_java(processes, cgroup, server, upstream, requests, imdsv2=True):
    """The Java SDK v1 policy client in the background; returns the process."""
    argv = [sys.executable, str(CLIENTS / "java_v1_policy.py"), "--host", server.host,
            "--port", str(server.port), "--requests", str(requests),
            "--upstream-host", upstream.host, "--upstream-port", str(upstream.port)]
    argv += ["--imdsv2"] * imdsv2
    return processes.spawn(argv, cgroup.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)


def finish(proc) -> dict:
    out, err = proc.communicate(timeout=CLIENT_TIMEOUT)
    assert proc.returncode == 0, f"client exited {proc.returncode}: {err[-2000:]}"
    return json.loads(out.strip().splitlines()[-1])


def test_sigkill_mid_storm_leaves_nothing_and_restart_resumes(pod, servers, agent, processes,
                                                              cgroups):
    server = servers(CredentialServer, lifetime=900)
    upstream = servers(ApiServer)
    first = agent(server)
    held = bpf_objects(first.proc.pid)
    programs = {p["id"]: p["name"] for p in bpftool("prog", "show") if p["id"] in held["prog"]}
    assert set(programs.values()) == attached_names(first), programs
    assert len(held["link"]) == len(programs), held
    assert existing("map", held["map"]) == held["map"] != set(), held
    links = {link["id"]: link for link in bpftool("link", "show") if link["id"] in held["link"]}
    assert {link["prog_id"] for link in links.values()} == set(programs), links

    client = spawn_java(processes, pod, server, upstream, requests=100_000)
    labels = dict(pod.labels, role=ROLE)
    wait_for(lambda: first.scrape().value(FETCHES, **labels) >= 20, what="a storm under way")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=KILL_TIMEOUT)

    # bpf_links belong to the descriptors of the process that made them: with it gone, the
    # kernel detaches and frees every program, link and map it held (asynchronously, so poll).
    for kind in ("link", "prog", "map"):
        wait_for(lambda: not existing(kind, held[kind]), KILL_TIMEOUT,
                 what=f"the killed agent's {kind}s {sorted(held[kind])} to disappear")
    attached = bpftool("cgroup", "show", str(cgroups.root))
    assert attached == [], f"still attached to {cgroups.root}: {attached}"
    assert client.poll() is None, "the client must still be running (the storm goes on)"

    # A new agent attaches again and counts the storm from its own start.
    served_at_start = server.counts()["credentials"]
    second = agent(server)
    served_at_ready = server.counts()["credentials"]
    wait_for(lambda: server.counts()["credentials"] >= served_at_ready + 20, what="more fetches")
    client.kill()  # ours, by pid: the storm is long enough to end it mid-run
    client.wait()
    # The server may still be answering a request that arrived just before the kill.
    served = _settled(lambda: server.counts()["credentials"])
    counted = _settled(lambda: second.scrape().value(FETCHES, **labels))
    # Every fetch served while the agent was ready is counted, except at most one whose request
    # left before the programs were attached and one whose response the killed client never
    # received; none is counted that was served before the agent started.
    assert served - served_at_ready - 2 <= counted <= served - served_at_start, (
        served_at_start, served_at_ready, served, counted)
    wait_for_value(second, 1, STORM, role=ROLE, **pod.labels)
    assert second.stop() == 0


def _settled(read, quiet=1.0, timeout=15):
    """The value `read` returns once it stopped changing for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return value
    raise AssertionError(f"value kept changing for {timeout}s: {last}")


def test_sigkill_while_idle_then_restart_counts_exactly(pod, servers, agent, processes):
    """Restart with no traffic in flight: the new agent's counts are exact."""
    server = servers(CredentialServer, lifetime=900)
    upstream = servers(ApiServer)
    first = agent(server)
    held = bpf_objects(first.proc.pid)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=KILL_TIMEOUT)
    for kind in ("link", "prog", "map"):
        wait_for(lambda: not existing(kind, held[kind]), KILL_TIMEOUT,
                 what=f"the killed agent's {kind}s to disappear")

    second = agent(server)
    client = finish(spawn_java(processes, pod, server, upstream, requests=10))
    assert client["errors"] == 0, client
    wait_for_value(second, client["credentials"], FETCHES, role=ROLE, **pod.labels)


def test_metrics_port_taken_is_a_clear_error(cgroups, servers, processes, tmp_path):
    server = servers(CredentialServer)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "127.0.0.1:%d" % taken.getsockname()[1]
        argv = [str(agent_binary()), "run", "--cgroup-path", str(cgroups.root), "--listen",
                address, "--metadata-endpoint", server.endpoint]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDWATCH_")}
        proc = processes.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
        _, err = proc.communicate(timeout=KILL_TIMEOUT)
    assert proc.returncode != 0, "the agent must not run without its metrics endpoint"
    assert address in err, err
    assert "in use" in err.lower(), err


def test_cgroup_deleted_with_traffic_in_flight(cgroups, servers, agent, processes):
    pod, refuge = cgroups.systemd_pod(), cgroups.plain()
    server = servers(CredentialServer, lifetime=900)
    upstream = servers(ApiServer)
    watcher = agent(server)

    # Long enough that it is still running when it is moved (it must finish on its own).
    client = spawn_java(processes, pod, server, upstream, requests=800)
    wait_for(lambda: watcher.scrape().value(FETCHES, **pod.labels) >= 5, what="fetches from the pod")
    # Move the client out and delete its cgroup while it keeps fetching: sockets it opened there
    # still carry the deleted cgroup's id for a while.
    with open(refuge.path / "cgroup.procs", "w") as procs:
        procs.write(str(client.pid))
    wait_for(lambda: _rmdir(pod.path), what=f"rmdir {pod.path}")
    report = finish(client)
    assert report["errors"] == 0, report
    assert report["body_sha256"] == server.body_digest(), "client got other bytes than were sent"

    assert watcher.proc.poll() is None, f"agent died:\n{watcher.stderr()[-3000:]}"
    assert http_get(watcher.port, "/readyz")[0] == 200
    # Every fetch is counted once, whichever label it ended up with (the pod, the refuge, or
    # /cgroup-id/<id> for a cgroup gone before it was indexed).
    wait_for_value(watcher, report["credentials"], FETCHES, role=ROLE)
    assert watcher.scrape().value(FETCHES, **refuge.labels) > 0, "traffic after the move"


def _rmdir(path) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError:
        time.sleep(0.05)
        return False


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metrics_ok(watcher) -> bool:
    try:
        return http_get(watcher.port, "/metrics")[0] == 200
    except OSError:
        return False


def test_connection_flood_on_the_metrics_port(servers, agent):
    """Anyone who reaches the metrics port can open connections. The agent serves a few at once
    and closes the rest straight away, so neither its descriptors nor its CPU run out (here with
    a descriptor limit low enough that an unbounded server would hit EMFILE and spin on accept),
    and it serves scrapes again as soon as the flood stops."""
    watcher = agent(servers(CredentialServer))
    pid = watcher.proc.pid
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (256, 256))
    base_fds = len(os.listdir(f"/proc/{pid}/fd"))
    flood = []
    try:
        for _ in range(600):
            flood.append(socket.create_connection(("127.0.0.1", watcher.port), timeout=5))
        cpu = _cpu_seconds(pid)
        time.sleep(2)
        busy = _cpu_seconds(pid) - cpu
        held = len(os.listdir(f"/proc/{pid}/fd")) - base_fds
        assert watcher.proc.poll() is None, "the agent died"
        assert held <= 64 + 2, f"{held} descriptors held for the flood"
        assert busy < 0.5, f"the agent was busy {busy:.2f} s of 2 s"
    finally:
        for conn in flood:
            conn.close()
    wait_for(lambda: _metrics_ok(watcher), timeout=10, what="/metrics after the flood")
    assert "accepting a metrics connection" not in watcher.stderr()
