"""Least privilege: once attached, `credwatch run` keeps only the capabilities it still needs,
and still does everything: counts metadata traffic, reads its kernel counters, attributes pods
created afterwards (a cgroup walk), and reads the resolv.conf of a pod process of another user.
"""

import platform
import re
import subprocess
import uuid
from pathlib import Path

from harness import CLIENTS, credserver, wait_for_count, wait_for_value
from test_metadata import credentials_request, run_java, run_raw
from test_secrets import DnsServer

CredentialServer, ApiServer, ROLE = credserver.CredentialServer, credserver.ApiServer, credserver.ROLE

CAP = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_BPF": 39}
# What agent/src/harden.rs keeps on every kernel once the programs are attached.
KEPT = ("CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH")
NOBODY = 65534


def kernel_version(release: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", release).groups()
    return int(major), int(minor)


def expected_capabilities(release: str, unprivileged_bpf_disabled: int) -> tuple[str, ...]:
    """What `credwatch run` as root keeps on this kernel, in the order it logs them. CAP_BPF is
    kept only where the kernel checks it on every bpf() call, counter reads included: before the
    rework of kernel.unprivileged_bpf_disabled (5.19), and only while that sysctl is on. Seen:
    kept on Debian's 5.10 and Ubuntu's 5.15, dropped on 6.1, 6.8, 6.12 and 6.18
    (docs/old-kernels.md, scripts/vm-kernel-test.sh)."""
    if kernel_version(release) < (5, 19) and unprivileged_bpf_disabled != 0:
        return (*KEPT, "CAP_BPF")
    return KEPT


def test_the_kept_capabilities_follow_the_kernel():
    assert expected_capabilities("6.18.44-fc-v1272", 2) == KEPT
    assert expected_capabilities("6.1.0-56-amd64", 2) == KEPT
    assert expected_capabilities("5.10.0-46-amd64", 2) == (*KEPT, "CAP_BPF")
    assert expected_capabilities("5.15.0-25-generic", 1) == (*KEPT, "CAP_BPF")
    assert expected_capabilities("5.15.0-25-generic", 0) == KEPT


def task_status(pid: int) -> list[dict[str, str]]:
    """/proc/<pid>/task/*/status of every thread (capabilities are per thread)."""
    tasks = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        lines = (task / "status").read_text().splitlines()
        tasks.append(dict(line.split(":\t", 1) for line in lines if ":\t" in line))
    return tasks


def test_only_needed_capabilities_remain_and_everything_still_works(cgroups, servers, agent,
                                                                     processes):
    server = servers(CredentialServer, lifetime=900)
    api = servers(ApiServer)
    watcher = agent(server)

    sysctl = int(Path("/proc/sys/kernel/unprivileged_bpf_disabled").read_text())
    kept = expected_capabilities(platform.release(), sysctl)
    wanted = sum(1 << CAP[name] for name in kept)
    for status in task_status(watcher.proc.pid):
        effective = int(status["CapEff"], 16)
        assert effective == wanted, \
            f"CapEff {status['CapEff']}, want exactly {kept} on Linux {platform.release()}"
        for field in ("CapPrm", "CapBnd"):
            assert int(status[field], 16) == effective, (field, status[field])
        assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1"
    logged = re.findall(r"dropped capabilities; kept ([A-Z_, ]+?)\s*$", watcher.stderr(), re.M)
    assert logged == [", ".join(kept)], f"the log says it kept {logged}, want {kept}"

    # A pod that appears after the drop: attributed through a fresh walk of the cgroup tree.
    late = cgroups.systemd_pod()
    client = run_java(processes, late, server, api, 8, imdsv2=True)
    wait_for_value(watcher, client["credentials"], "credwatch_credential_fetches_total",
                   role=ROLE, **late.labels)
    wait_for_value(watcher, 1, "credwatch_credential_refresh_storm", role=ROLE, **late.labels)
    # The kernel's counters are still readable at scrape time.
    rejects = "credwatch_parse_rejects_total"
    before = watcher.scrape().value(rejects, reason="not_http")
    run_raw(processes, late, server, b"\x16\x03\x01\x00\xa5" + bytes(64))
    wait_for_count(lambda: watcher.scrape().value(rejects, reason="not_http"), before + 1,
                   what="the not_http reject read from the kernel's counters")
    assert watcher.stop() == 0, "detaching needs no capability either"


def test_reads_resolv_conf_of_a_pod_process_of_another_user(pod, agent, processes, tmp_path):
    """Reading /proc/<pid>/root of a process of another user is what CAP_SYS_PTRACE is kept
    for: without it this expansion count stays 0."""
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    search = [f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"search {' '.join(search)}\nnameserver 127.0.0.1\noptions ndots:5\n")
    conf.chmod(0o644)
    dns = DnsServer()
    try:
        watcher = agent(extra_args=("--dns-port", str(dns.port)))
        names = [f"api.example.com.{suffix}" for suffix in search] + ["api.example.com"]
        # The client's source is passed inline: the unprivileged user cannot read the tree.
        source = (CLIENTS / "dns_queries.py").read_text()
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && shift && exec "$@"', str(conf), "-",
                "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                "--inh-caps=-all", "--", "/usr/bin/python3", "-c", source,
                "--server", "127.0.0.1", "--port", str(dns.port), *names]
        client = processes.spawn(argv, pod.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        out, err = client.communicate(timeout=30)
        assert client.returncode == 0, err
        assert '"rcodes": [3, 3, 3, 0]' in out, out
        wait_for_value(watcher, len(names), "credwatch_dns_requests_total", **pod.labels)
        wait_for_value(watcher, len(search), "credwatch_dns_search_expansion_queries_total",
                       **pod.labels)
    finally:
        dns.close()
