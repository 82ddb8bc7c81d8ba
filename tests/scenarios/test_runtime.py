"""The shipped DaemonSet, run for real: the image `cargo xtask image` built (localhost/credwatch:dev)
under podman and runc, with the pod spec that `kubectl kustomize` renders for each profile
(deploy/base: privileged; deploy/overlays/least-privilege), translated mechanically into
`podman run` by tests/fixtures/podspec.py: image, args, env (NODE_NAME from a stand-in node name),
securityContext, hostPID, resource limits, every volume mount. The suite adds only the agent's
own flags that point it at the test cgroup subtree (never the root) and at the fake credential
servers.

Workloads are real podman containers in the kubelet cgroupfs shape
(`<subtree>/kubepods/besteffort/pod<uid>/libpod-<id>`), a sandbox container and the app
containers of each pod in a network namespace of the pod's own (made here) with its own
/etc/resolv.conf (cluster search list, ndots:5). The servers a pod talks to run on loopback inside
its namespace, outside the watched subtree, and keep their own records: the credential servers
count what they served, dnsmasq logs every query, the API stand-in counts connections.

Asserted exactly, in both profiles: series per container, labelled with the container id; a
refresh storm for the KIAM-like pod only; DNS counts equal to dnsmasq's log, search-list expansion
included, also for Job-like containers that resolved a name or fetched credentials once and
exited while the agent was busy (frozen), counted under their pod; TCP connects; no ERROR line in
the agent's log; the capabilities the running agent keeps; SIGTERM detaches every program.

Also here, on the privileged profile's running agent: the scrape configuration the Prometheus
Operator generates for deploy/base's ServiceMonitor, run by Debian's Prometheus (test_operator_*).

Safety: loopback only, inside network namespaces made here; cgroups only under the session's
credwatch-test-<pid> subtree (the agent's --cgroup-path) and the same path in the v1 hierarchies
(podman creates it there too; removed afterwards); containers and images named credwatch-test-*,
removed afterwards; the agent container is stopped with SIGTERM and its programs are checked gone.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import subprocess
import urllib.parse
import uuid
from pathlib import Path

import pytest
import yaml

from harness import Metrics, Processes, credserver, http_get, remove_tree, wait_for
from test_deploy import BASE, LEAST_PRIVILEGE, RULES, by_kind, render, tool
import netlab  # tests/fixtures, on sys.path through harness
import podspec
from dnsserver import Dnsmasq
from podspec import in_netns

AGENT_IMAGE = "localhost/credwatch:dev"
IMAGE_REPOSITORY = "ghcr.io/credwatch/credwatch"
PROFILES = {"privileged": BASE, "least-privilege": LEAST_PRIVILEGE}
NODE_NAME = "credwatch-test-node"
ROLE = credserver.ROLE
SEARCH = ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local")
DNS_SERVER = "127.0.0.53"
RESOLV_CONF = f"search {' '.join(SEARCH)}\nnameserver {DNS_SERVER}\noptions ndots:5\n"
KIAM_FETCHES = 8
APP_UID = "1000:1000"
PAUSE_UID = "65535:65535"
SETTLE_TIMEOUT = 45

# What the agent keeps once attached (agent/src/harden.rs KEPT; CAP_BPF only on kernels that
# check it on every bpf() call, not this one).
KEPT_AFTER_ATTACH = {"cap_sys_ptrace", "cap_dac_read_search"}


# --- the node: agent container, pods, servers ------------------------------------------------------


@dataclasses.dataclass
class PodRun:
    """A kubelet-shaped pod: a sandbox container and app containers sharing a network namespace,
    under `<subtree>/kubepods/besteffort/pod<uid>`."""

    name: str
    uid: str
    netns: netlab.Netns
    cgroup_parent: str
    containers: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> full id

    def labels(self, container: str | None = None) -> dict[str, str]:
        """The fallback labels the agent should give the pod's series (no Kubernetes API here):
        the pod UID, and the short container id."""
        labels = {"pod": self.uid}
        if container is not None:
            labels["container"] = self.containers[container][:12]
        return labels


@dataclasses.dataclass
class Node:
    profile: str
    pod_spec: dict
    argv: list[str]
    agent: str  # container name
    agent_netns: str
    podman: podspec.Podman
    pods: dict[str, PodRun]
    servers: dict[str, object]
    dns: dict[str, Dnsmasq]
    subtree: Path
    workdir: Path
    metrics_port: int

    def get(self, path: str) -> tuple[int, str]:
        with in_netns(self.agent_netns):
            return http_get(self.metrics_port, path)

    def scrape(self) -> Metrics:
        status, body = self.get("/metrics")
        assert status == 200, body
        return Metrics.parse(body)

    def pid(self) -> int:
        return self.podman.inspect(self.agent)["State"]["Pid"]

    def log(self) -> str:
        return self.podman.logs(self.agent)


def workload_command(script: str) -> list[str]:
    return ["/bin/busybox", "sh", "-c", script]


def sandbox(podman: podspec.Podman, pod: PodRun, image: str, resolv_conf: Path) -> None:
    """The pod's sandbox ("pause") container: it holds the pod's namespaces and lives as long
    as the pod, like kubelet's."""
    pod.containers["sandbox"] = podman.workload(
        f"{pod.name}-sandbox", image, workload_command("exec /bin/busybox sleep 3600"),
        cgroup_parent=pod.cgroup_parent, netns=pod.netns.name, resolv_conf=resolv_conf,
        user=PAUSE_UID)


def start_app(podman: podspec.Podman, pod: PodRun, image: str, resolv_conf: Path,
              script: str, container: str = "app") -> str:
    pod.containers[container] = podman.workload(
        f"{pod.name}-{container}", image, workload_command(script),
        cgroup_parent=pod.cgroup_parent, netns=pod.netns.name, resolv_conf=resolv_conf,
        user=APP_UID)
    return pod.containers[container]


def make_pod(lab: netlab.Lab, subtree_name: str, name: str) -> PodRun:
    uid = str(uuid.uuid4())
    netns = lab.netns(name)
    return PodRun(name, uid, netns, f"/{subtree_name}/kubepods/besteffort/pod{uid}")


def start_dnsmasq(pod: PodRun, workdir: Path, *options: str) -> Dnsmasq:
    with in_netns(pod.netns.name):
        dns = Dnsmasq(workdir / f"dnsmasq-{pod.name}", [DNS_SERVER], [
            "--local=/cluster.local/", "--local=/example.com/", *options])
    dns.argv = pod.netns.exec_argv(dns.argv)
    return dns.start()


def cgroup_mounts() -> list[Path]:
    """Every cgroup (v1) and cgroup2 mount point: podman's cgroupfs driver makes the parent path
    in all of them."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(Path(fields[4]))
    return mounts


@pytest.fixture(scope="module", params=list(PROFILES))
def node(request, cgroups, tmp_path_factory):
    profile = request.param
    if os.geteuid() != 0:
        pytest.skip("the runtime suite runs containers and loads eBPF programs (root)")
    for name in ("podman", "buildah", "runc", "bpftool", "ip"):
        tool(name)
    if podspec.podman("image", "exists", AGENT_IMAGE, check=False).returncode != 0:
        pytest.fail(f"{AGENT_IMAGE} is missing: `cargo xtask image` builds it "
                    "(`cargo xtask test` does before this suite)")
    workdir = tmp_path_factory.mktemp(f"runtime-{profile}")
    image = podspec.workload_image(workdir)
    seccomp = podspec.containerd_runtime_default_seccomp(workdir / "runtime-default.json")
    daemonset = by_kind(render(PROFILES[profile]))["DaemonSet"]
    pod_spec = daemonset["spec"]["template"]["spec"]

    processes = Processes()
    lab = netlab.Lab(processes)
    podman = podspec.Podman(f"credwatch-test-{os.getpid()}-{profile}")
    subtree = cgroups.root
    servers: dict[str, object] = {}
    dns: dict[str, Dnsmasq] = {}
    pods: dict[str, PodRun] = {}
    resolv = workdir / "resolv.conf"
    resolv.write_text(RESOLV_CONF)
    resolv.chmod(0o644)
    try:
        # Pods' network namespaces and the servers in them, before the agent: it is told the
        # credential servers' addresses at start.
        for name in ("kiam", "healthy", "dns", "job", "tcp"):
            pods[name] = make_pod(lab, subtree.name, name)
        with in_netns(pods["kiam"].netns.name):
            servers["kiam"] = credserver.CredentialServer("127.0.0.1", lifetime=900).start()
        with in_netns(pods["healthy"].netns.name):
            servers["healthy"] = credserver.CredentialServer("127.0.0.1", lifetime=21600).start()
        with in_netns(pods["dns"].netns.name):
            servers["dns-api"] = credserver.ApiServer("127.0.0.1").start()
        with in_netns(pods["job"].netns.name):
            servers["job"] = credserver.CredentialServer("127.0.0.1", lifetime=21600).start()
        with in_netns(pods["tcp"].netns.name):
            servers["tcp-api"] = credserver.ApiServer("127.0.0.1").start()
        dns["dns"] = start_dnsmasq(pods["dns"], workdir, "--address=/api.example.com/127.0.0.1")
        dns["job"] = start_dnsmasq(pods["job"], workdir, "--address=/batch.example.com/127.0.0.1")

        # The agent, as the DaemonSet runs it, in a network namespace of its own (its pod's).
        agent_ns = lab.netns("agent")
        agent_name = podman.name("agent")
        test_flags = ["--cgroup-path", str(subtree), "--no-default-endpoints"]
        for key in ("kiam", "healthy", "job"):
            test_flags += ["--metadata-endpoint", f"imds={servers[key].endpoint}"]
        argv = podspec.translate(
            pod_spec, name=agent_name, images={IMAGE_REPOSITORY: AGENT_IMAGE},
            node_name=NODE_NAME, netns=agent_ns.name, runtime_default_seccomp=seccomp,
            extra_args=test_flags)
        (container,) = pod_spec["containers"]
        probes = podspec.probes(container)
        metrics_port = probes["readinessProbe"][1]
        node = Node(profile, pod_spec, argv, agent_name, agent_ns.name, podman, pods, servers,
                    dns, subtree, workdir, metrics_port)
        podman.run(argv)

        def ready():
            state = podman.inspect(agent_name)["State"]
            if not state["Running"]:
                raise AssertionError(f"the agent container exited {state['ExitCode']}:\n"
                                     f"{node.log()[-3000:]}")
            try:
                return node.get(probes["readinessProbe"][0])[0] == 200
            except OSError:
                return False

        wait_for(ready, 60, interval=0.2, what=f"the agent's readinessProbe ({profile})")

        # Workloads, each pod a sandbox and its app containers.
        for pod in pods.values():
            sandbox(podman, pod, image, resolv)
        kiam, healthy = servers["kiam"], servers["healthy"]
        credentials = f"{credserver.ROLE_LIST_PATH}{ROLE}"
        # The KIAM-like pod: an app whose SDK (Java v1's 15-minute refresh window, emulated)
        # fetches again before every request, since KIAM hands out 15-minute credentials.
        start_app(podman, pods["kiam"], image, resolv,
                  f"for i in $(/bin/busybox seq {KIAM_FETCHES}); do /bin/busybox wget -q -O /dev/null "
                  f"http://127.0.0.1:{kiam.port}{credentials} || exit 1; done; "
                  "exec /bin/busybox sleep 3600")
        # The healthy pod: one fetch of 6-hour credentials.
        start_app(podman, pods["healthy"], image, resolv,
                  f"/bin/busybox wget -q -O /dev/null http://127.0.0.1:{healthy.port}{credentials} "
                  "|| exit 1; exec /bin/busybox sleep 3600")
        # A long-lived app that resolves an external name (ndots:5: every suffix first).
        dns_api = servers["dns-api"]
        start_app(podman, pods["dns"], image, resolv,
                  "/usr/bin/getent ahosts api.example.com > /dev/null || exit 1; "
                  f"/bin/busybox wget -q -O /dev/null http://127.0.0.1:{dns_api.port}/ || exit 1; "
                  "exec /bin/busybox sleep 3600")
        # TCP: two connections that complete, one refused (nothing listens on the port).
        tcp_api = servers["tcp-api"]
        closed = netlab_closed_port(pods["tcp"])
        start_app(podman, pods["tcp"], image, resolv,
                  f"/bin/busybox wget -q -O /dev/null http://127.0.0.1:{tcp_api.port}/ || exit 1; "
                  f"/bin/busybox wget -q -O /dev/null http://127.0.0.1:{tcp_api.port}/ || exit 1; "
                  f"/bin/busybox wget -q -O /dev/null http://127.0.0.1:{closed}/ && exit 1; "
                  "exec /bin/busybox sleep 3600")

        # The Job-like containers run and exit while the agent is frozen (a busy or
        # CPU-throttled agent): their events wait in the kernel until the agent runs again,
        # when the containers and their processes are gone. One resolves a name, the other
        # fetches credentials by address (no DNS: the DNS path does not record its cgroup).
        podspec.podman("pause", agent_name)
        try:
            jobs = {
                "job": "/usr/bin/getent ahosts batch.example.com > /dev/null",
                "fetch": f"/bin/busybox wget -q -O /dev/null "
                         f"http://127.0.0.1:{servers['job'].port}{credentials}",
            }
            for container, script in jobs.items():
                start_app(podman, pods["job"], image, resolv, script, container)
            for container in jobs:
                name = f"{podman.prefix}-job-{container}"
                exit_code = podman.wait(name)
                assert exit_code == 0, podman.logs(name)
            dns["job"].wait_answered(1)
            # As on a node: the runtime removes an exited container's cgroup before the agent
            # runs again (podman's cleanup does it shortly after the exit; `podman rm` makes
            # sure of it).
            for container in jobs:
                podspec.podman("rm", f"{podman.prefix}-job-{container}")
                cgroup = (cgroups.mount / pods["job"].cgroup_parent.lstrip("/")
                          / f"libpod-{pods['job'].containers[container]}")
                wait_for(lambda: not cgroup.exists(), 30, interval=0.1,
                         what=f"the Job container {container}'s cgroup removed")
        finally:
            podspec.podman("unpause", agent_name)

        for pod in pods.values():
            for container in pod.containers:
                if container in ("job", "fetch"):
                    continue
                state = podman.inspect(f"{podman.prefix}-{pod.name}-{container}")["State"]
                assert state["Running"], (
                    f"{pod.name}/{container} exited {state['ExitCode']}: "
                    f"{podman.logs(f'{podman.prefix}-{pod.name}-{container}')[-1000:]}")
        yield node
    finally:
        podman.remove_all()
        podspec.remove_image(image)
        for server in servers.values():
            server.close()
        for server in dns.values():
            server.close()
        lab.close()
        processes.end_all()
        # podman made the pods' parent cgroups in every hierarchy; the session removes the
        # cgroup2 subtree itself.
        for mount in cgroup_mounts():
            target = mount / subtree.name
            if mount == cgroups.mount:
                target = target / "kubepods"
            remove_tree(target)


def netlab_closed_port(pod: PodRun) -> int:
    """A loopback port nobody listens on inside the pod's namespace."""
    import socket

    with in_netns(pod.netns.name):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def settled(node: Node, predicate, what: str):
    last = {}

    def check():
        last["metrics"] = node.scrape()
        return predicate(last["metrics"])

    try:
        return wait_for(check, SETTLE_TIMEOUT, interval=0.25, what=what) and last["metrics"]
    except AssertionError as err:
        raise AssertionError(f"{err} ({node.profile}); agent exported:\n"
                             f"{last['metrics'].describe()}") from None


# --- the container as the manifest says ------------------------------------------------------------


def status_caps(pid: int, field: str) -> set[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(re.search(rf"^{field}:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    if not mask:
        return set()
    decoded = subprocess.run(["capsh", f"--decode={mask:x}"], capture_output=True,
                             text=True).stdout.strip()
    return set(decoded.split("=", 1)[1].split(","))


def test_agent_container_runs_as_the_pod_spec_says(node):
    (container,) = node.pod_spec["containers"]
    context = container["securityContext"]
    info = node.podman.inspect(node.agent)
    host = info["HostConfig"]
    assert info["Config"]["User"] == str(context["runAsUser"])
    assert host["ReadonlyRootfs"] is context["readOnlyRootFilesystem"] is True
    assert host["PidMode"] == ("host" if node.pod_spec.get("hostPID") else "private")
    assert host["NetworkMode"] == f"ns:/run/netns/{node.agent_netns}"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    for mount in container["volumeMounts"]:
        assert mounts[mount["mountPath"]]["RW"] is not mount.get("readOnly", False), mount
    bounding = status_caps(node.pid(), "CapBnd")
    if context.get("privileged"):
        assert host["Privileged"] is True
        status = Path(f"/proc/{node.pid()}/status").read_text()
        assert re.search(r"^Seccomp:\s*0$", status, re.M), "privileged: no seccomp filter"
    else:
        wanted = {"cap_" + cap.lower() for cap in context["capabilities"]["add"]}
        assert host["Privileged"] is False
        # The runtime's bounding set is exactly the spec's list (the agent can only shrink it).
        assert bounding <= wanted, bounding
        status = Path(f"/proc/{node.pid()}/status").read_text()
        assert re.search(r"^NoNewPrivs:\s*1$", status, re.M)
        assert re.search(r"^Seccomp:\s*2$", status, re.M), "RuntimeDefault seccomp filter"
    # The image itself: nothing but the binary, root-owned and read-only for everyone.
    image = json.loads(podspec.podman("image", "inspect", AGENT_IMAGE).stdout)[0]
    assert image["Config"]["Entrypoint"] == ["/usr/bin/credwatch"]
    assert len(image["RootFS"]["Layers"]) == 1


def test_every_container_is_labelled_with_its_container_id(node):
    wanted = {
        ("credwatch_credential_fetches_total", "kiam", "app"),
        ("credwatch_credential_fetches_total", "healthy", "app"),
        ("credwatch_dns_requests_total", "dns", "app"),
        ("credwatch_tcp_connects_total", "tcp", "app"),
    }
    metrics = settled(node, lambda m: all(
        m.value(name, **node.pods[pod].labels()) > 0 for name, pod, _ in wanted),
        "series of every pod")
    for name, pod, container in wanted:
        labels = node.pods[pod].labels(container)
        assert metrics.value(name, **labels) > 0, (
            f"{name} of {pod}/{container}: no series labelled {labels}; the pod's series are "
            f"labelled {sorted(dict(k) for k in metrics.select(name, **node.pods[pod].labels()))}")


# --- credentials -----------------------------------------------------------------------------------


def test_storm_flagged_for_the_kiam_like_pod_only(node):
    kiam, healthy = node.pods["kiam"], node.pods["healthy"]
    fetches = "credwatch_credential_fetches_total"
    storm = "credwatch_credential_refresh_storm"
    metrics = settled(node, lambda m: m.value(fetches, **kiam.labels()) >= KIAM_FETCHES
                      and m.value(fetches, **healthy.labels()) >= 1, "credential fetches")
    # Exactly what the servers served, pod by pod.
    assert metrics.value(fetches, role=ROLE, **kiam.labels()) \
        == node.servers["kiam"].counts()["credentials"] == KIAM_FETCHES
    assert metrics.value(fetches, role=ROLE, **healthy.labels()) \
        == node.servers["healthy"].counts()["credentials"] == 1
    assert metrics.value(storm, role=ROLE, **kiam.labels()) == 1, metrics.describe()
    assert metrics.select(storm, role=ROLE, **healthy.labels()), "the healthy pod's flag exists"
    assert metrics.value(storm, role=ROLE, **healthy.labels()) == 0
    flagged = {dict(k)["pod"] for k, v in metrics.select(storm).items() if v == 1}
    assert flagged == {kiam.uid}
    # IMDSv1 (no token) GETs, each counted once.
    assert metrics.value("credwatch_metadata_imdsv1_requests_total", **kiam.labels()) \
        == KIAM_FETCHES
    # No credential byte in the agent's log.
    for key in ("kiam", "healthy"):
        assert node.servers[key].canary not in node.log()


def test_credential_fetch_of_an_exited_job_container_is_the_pods(node):
    # Its cgroup is gone when the agent reads the request: the kernel recorded the parent at
    # the request (the container made no DNS query, whose answer would record it too).
    job = node.pods["job"]
    fetches = "credwatch_credential_fetches_total"
    metrics = settled(node, lambda m: m.value(fetches, **job.labels()) >= 1,
                      "the exited Job container's credential fetch")
    assert metrics.value(fetches, role=ROLE, **job.labels()) \
        == node.servers["job"].counts()["credentials"] == 1
    assert node.servers["job"].canary not in node.log()


# --- DNS -------------------------------------------------------------------------------------------


def logged_expansions(queries, names) -> list:
    expanded = {f"{name}.{suffix}" for name in names for suffix in SEARCH}
    return [q for q in queries if q.name in expanded and q.rcode == "NXDOMAIN"]


def expect_dns_log(node: Node, pod_name: str, names: list[str], container: str | None = None):
    pod = node.pods[pod_name]
    logged = node.dns[pod_name].wait_answered(1)
    counts = collections.Counter((q.qtype, q.rcode) for q in logged)

    def complete(m):
        return m.value("credwatch_dns_requests_total", **pod.labels()) >= len(logged)

    metrics = settled(node, complete, f"DNS requests of {pod_name}")
    for (qtype, rcode), n in counts.items():
        assert metrics.value("credwatch_dns_requests_total", qtype=qtype, rcode=rcode,
                             **pod.labels()) == n, (qtype, rcode, metrics.describe("credwatch_dns"))
    assert metrics.value("credwatch_dns_requests_total", **pod.labels()) == len(logged)
    return logged, metrics


def test_dns_requests_equal_the_server_log(node):
    logged, _ = expect_dns_log(node, "dns", ["api.example.com"])
    # glibc with ndots:5: every suffix, A and AAAA, then the name itself.
    assert len(logged) == 2 * (len(SEARCH) + 1), [(q.qtype, q.name, q.rcode) for q in logged]


def assert_expansion_equals_the_server_log(node, pod_name: str, names: list[str], what: str):
    """The pod's search-list expansions in dnsmasq's log (every suffix, A and AAAA) are what the
    agent exports for it, exactly."""
    pod = node.pods[pod_name]
    logged, _ = expect_dns_log(node, pod_name, names)
    expansions = logged_expansions(logged, names)
    assert len(expansions) == 2 * len(SEARCH)
    name = "credwatch_dns_search_expansion_queries_total"
    metrics = settled(node, lambda m: m.value(name, **pod.labels()) >= len(expansions), what)
    assert metrics.value(name, **pod.labels()) == len(expansions)


def test_dns_search_expansion_equals_the_server_log(node):
    assert_expansion_equals_the_server_log(node, "dns", ["api.example.com"],
                                           "search-list expansion of the long-lived pod")


def test_dns_of_an_exited_job_container_is_analysed(node):
    # The container's cgroup is gone when the agent runs again: the kernel recorded its parent
    # (the pod's cgroup) while it existed, and the pod's sandbox holds the resolv.conf.
    assert_expansion_equals_the_server_log(node, "job", ["batch.example.com"],
                                           "search-list expansion of the exited Job container")


# --- TCP -------------------------------------------------------------------------------------------


def test_tcp_connects(node):
    pod = node.pods["tcp"]
    name = "credwatch_tcp_connects_total"
    metrics = settled(node, lambda m: m.value(name, **pod.labels()) >= 3, "TCP connects")
    accepted = node.servers["tcp-api"].counts().get("api", 0)
    assert accepted == 2
    assert metrics.value(name, result="established", **pod.labels()) == accepted
    assert metrics.value(name, result="refused", **pod.labels()) == 1
    assert metrics.value(name, **pod.labels()) == 3


# --- the agent's own behaviour ---------------------------------------------------------------------


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.match(r"^\[\S+ ERROR", line)]


def test_no_error_in_the_agent_log(node):
    log = node.log()
    assert "ready: metrics on" in log, log[-2000:]
    assert error_lines(log) == [], log[-3000:]


def test_agent_keeps_only_the_capabilities_it_needs(node):
    pid = node.pid()
    effective = status_caps(pid, "CapEff")
    assert effective == KEPT_AFTER_ATTACH, effective
    assert status_caps(pid, "CapPrm") == effective
    assert status_caps(pid, "CapAmb") == set() and status_caps(pid, "CapInh") == set()
    status = Path(f"/proc/{pid}/status").read_text()
    assert re.search(r"^NoNewPrivs:\s*1$", status, re.M)
    (container,) = node.pod_spec["containers"]
    context = container["securityContext"]
    bounding = status_caps(pid, "CapBnd")
    log = node.log()
    if context.get("privileged"):
        # With CAP_SETPCAP the agent shrinks the bounding set too.
        assert bounding == KEPT_AFTER_ATTACH, bounding
        assert "bounding set left" not in log
    else:
        # Without it the bounding set stays the profile's list, which no_new_privs seals.
        assert bounding == {"cap_" + cap.lower() for cap in context["capabilities"]["add"]}
        assert "bounding set left as the runtime set it" in log, log[-2000:]
    assert error_lines(log) == []


# --- Prometheus Operator ---------------------------------------------------------------------------


def operator_scrape_config(objects: list[dict], targets_file: Path) -> dict:
    """The scrape job the Prometheus Operator (pkg/prometheus/promcfg.go,
    generateServiceMonitorConfig) generates for the ServiceMonitor's one endpoint, with the
    endpointslice role; the Kubernetes service discovery (which Debian's Prometheus is built
    without) is replaced by a file_sd target carrying the same __meta_kubernetes_* labels."""
    kinds = by_kind(objects)
    monitor = kinds["ServiceMonitor"]
    spec = monitor["spec"]
    (endpoint,) = spec["endpoints"]
    relabel = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    for key, value in sorted(spec["selector"]["matchLabels"].items()):
        label = re.sub(r"[^a-zA-Z0-9_]", "_", key)
        relabel.append({"action": "keep",
                        "source_labels": [f"__meta_kubernetes_service_label_{label}",
                                          f"__meta_kubernetes_service_labelpresent_{label}"],
                        "regex": f"({value});true"})
    relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                    "regex": endpoint["port"]})
    kind_name = ["__meta_kubernetes_endpointslice_address_target_kind",
                 "__meta_kubernetes_endpointslice_address_target_name"]
    relabel += [
        {"source_labels": kind_name, "separator": ";", "regex": "Node;(.*)",
         "replacement": "${1}", "target_label": "node"},
        {"source_labels": kind_name, "separator": ";", "regex": "Pod;(.*)",
         "replacement": "${1}", "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
         "regex": "(Failed|Succeeded)"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job",
         "replacement": "${1}"},
    ]
    if spec.get("jobLabel"):
        label = re.sub(r"[^a-zA-Z0-9_]", "_", spec["jobLabel"])
        relabel.append({"source_labels": [f"__meta_kubernetes_service_label_{label}"],
                        "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    relabel.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    for rule in endpoint.get("relabelings", []):
        relabel.append({names.get(k, k): v.lower() if k == "action" else v
                        for k, v in rule.items()})
    relabel.append({"source_labels": ["__address__"], "target_label": "__tmp_hash",
                    "modulus": 1, "action": "hashmod"})
    relabel.append({"source_labels": ["__tmp_hash"], "regex": "0", "action": "keep"})
    job = {"job_name": f"serviceMonitor/{monitor['metadata']['namespace']}/"
                       f"{monitor['metadata']['name']}/0",
           "honor_labels": False,
           "file_sd_configs": [{"files": [str(targets_file)]}],
           "scrape_interval": "1s", "scrape_timeout": "1s",
           "metrics_path": endpoint["path"], "relabel_configs": relabel}
    if endpoint.get("metricRelabelings"):
        job["metric_relabel_configs"] = endpoint["metricRelabelings"]
    return job


def discovered_target(objects: list[dict], address: str) -> dict:
    """What Kubernetes service discovery (endpointslice role) says about the agent pod's
    endpoint, from the rendered objects."""
    kinds = by_kind(objects)
    service, daemonset = kinds["Service"], kinds["DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    labels = {
        "__meta_kubernetes_namespace": service["metadata"]["namespace"],
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpointslice_port_name": service["spec"]["ports"][0]["name"],
        "__meta_kubernetes_endpointslice_address_target_kind": "Pod",
        "__meta_kubernetes_endpointslice_address_target_name": "credwatch-x7k2p",
        "__meta_kubernetes_pod_name": "credwatch-x7k2p",
        "__meta_kubernetes_pod_container_name": container["name"],
        "__meta_kubernetes_pod_node_name": NODE_NAME,
        "__meta_kubernetes_pod_phase": "Running",
    }
    for key, value in service["metadata"]["labels"].items():
        label = re.sub(r"[^a-zA-Z0-9_]", "_", key)
        labels[f"__meta_kubernetes_service_label_{label}"] = value
        labels[f"__meta_kubernetes_service_labelpresent_{label}"] = "true"
    return {"targets": [address], "labels": labels}


# The operator's scrape job is checked once, against the privileged profile's agent.
ON_PRIVILEGED = pytest.mark.parametrize("node", ["privileged"], indirect=True)


@pytest.fixture(scope="module")
def operator_prometheus(node, tmp_path_factory):
    prometheus = tool("prometheus")
    tmp = tmp_path_factory.mktemp("operator")
    objects = render(BASE)
    targets = tmp / "targets.json"
    targets.write_text(json.dumps([discovered_target(objects, f"127.0.0.1:{node.metrics_port}")]))
    rules = yaml.safe_load(RULES.read_text())
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [operator_scrape_config(objects, targets)]}))
    port = 9090
    with open(tmp / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", node.agent_netns, prometheus,
             f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def query(expr):
            with in_netns(node.agent_netns):
                status, body = http_get(port, "/api/v1/query?" + urllib.parse.urlencode(
                    {"query": expr}))
            answer = json.loads(body)
            assert status == 200 and answer["status"] == "success", body[:500]
            return answer["data"]["result"]

        def scraped():
            if proc.poll() is not None:
                raise AssertionError((tmp / "prometheus.log").read_text()[-2000:])
            try:
                return query('count(credwatch_credential_fetches_total) >= 2')
            except OSError:
                return False

        wait_for(scraped, 40, interval=0.5, what="Prometheus scraping the agent")
        yield query
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@ON_PRIVILEGED
def test_operator_target_labels_are_the_agent_pods(node, operator_prometheus):
    (up,) = operator_prometheus('up')
    labels = up["metric"]
    assert labels["job"] == "credwatch" and labels["service"] == "credwatch"
    assert labels["endpoint"] == "metrics" and labels["node"] == NODE_NAME
    # Dropped by the ServiceMonitor: they would collide with the workload labels.
    assert not {"namespace", "pod", "container"} & set(labels), labels
    # The workload labels are the agent's own.
    kiam = node.pods["kiam"]
    (series,) = operator_prometheus(
        f'credwatch_credential_refresh_storm{{pod="{kiam.uid}"}}')
    assert series["metric"]["pod"] == kiam.uid and series["metric"]["node"] == NODE_NAME


@ON_PRIVILEGED
def test_operator_scrape_has_no_exported_labels(node, operator_prometheus):
    """No series arrives with an exported_* label: the agent's labels never collide with the
    operator's target labels (job, instance, namespace, service, pod, container, endpoint)."""
    collided = operator_prometheus('{__name__=~"credwatch_.+", exported_endpoint!=""}')
    names = sorted({s["metric"]["__name__"] for s in collided})
    assert not names, f"series with exported_endpoint: {names}"
    for label in ("exported_namespace", "exported_pod", "exported_container", "exported_job",
                  "exported_instance", "exported_service"):
        assert not operator_prometheus(f'{{__name__=~"credwatch_.+", {label}!=""}}'), label
    assert operator_prometheus('credwatch_credential_fetches_total{metadata_endpoint="imds"}')


@ON_PRIVILEGED
def test_operator_rules_and_dashboards_see_the_agent_labels(node, operator_prometheus):
    """Every alert expression and dashboard query, run through the operator-shaped job, groups
    by labels that exist: a `sum by (…, metadata_endpoint, …)` over credential series returns
    the endpoint, not an empty label."""
    kiam = node.pods["kiam"]
    result = operator_prometheus(
        f'sum by (pod, metadata_endpoint, role) '
        f'(credwatch_credential_fetches_total{{pod="{kiam.uid}"}})')
    assert [r["metric"].get("metadata_endpoint") for r in result] == ["imds"], result


# --- SIGTERM (last: it stops the agent) ------------------------------------------------------------


def attached_programs(subtree: Path) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", str(subtree)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip() or "[]")


def test_sigterm_detaches_everything(node):
    before = attached_programs(node.subtree)
    assert {p["name"] for p in before} >= {"cw_skb_egress", "cw_skb_ingress"}, before
    # `podman stop` sends the image's stop signal (SIGTERM), as kubelet does.
    podspec.podman("stop", "--time", str(node.pod_spec["terminationGracePeriodSeconds"]),
                   node.agent, timeout=60)
    state = node.podman.inspect(node.agent)["State"]
    assert state["ExitCode"] == 0, node.log()[-2000:]
    assert "shutting down: detaching programs" in node.log()
    assert attached_programs(node.subtree) == []
    for program in before:
        gone = subprocess.run(["bpftool", "prog", "show", "id", str(program["id"])],
                              capture_output=True, text=True)
        assert gone.returncode != 0, f"program {program['id']} ({program['name']}) still loaded"


def test_least_privilege_fails_under_the_containers_common_runtime_default(cgroups, tmp_path):
    """CRI-O and podman take RuntimeDefault from containers/common, which (in the version Debian
    ships) denies bpf(2) to a container without CAP_SYS_ADMIN, whatever else it holds: the
    least-privilege profile cannot start there, and says why (docs/deploy.md tells CRI-O users to
    use a Localhost profile). If this starts passing, containers/common has caught up with
    containerd: update the docs."""
    pod_spec = by_kind(render(LEAST_PRIVILEGE))["DaemonSet"]["spec"]["template"]["spec"]
    lab = netlab.Lab(Processes())
    podman = podspec.Podman(f"credwatch-test-{os.getpid()}-crio")
    try:
        netns = lab.netns("crio")
        argv = podspec.translate(
            pod_spec, name=podman.name("agent"), images={IMAGE_REPOSITORY: AGENT_IMAGE},
            node_name=NODE_NAME, netns=netns.name,
            runtime_default_seccomp=podspec.CONTAINERS_SECCOMP,
            extra_args=["--cgroup-path", str(cgroups.root), "--no-default-endpoints",
                        "--metadata-endpoint", "127.0.0.1:9"])
        podman.run(argv)
        assert podman.wait(podman.names[-1]) == 1
        log = podman.logs(podman.names[-1])
        assert re.search(r"failed to create map .*Operation not permitted", log), log[-2000:]
    finally:
        podman.remove_all()
        lab.close()
