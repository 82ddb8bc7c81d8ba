"""Helpers for credwatch's scenario tests: cgroup2 subtrees, the agent process, clients spawned
into a cgroup, /metrics scraping and polling.

Safety: everything here talks to loopback only, creates cgroups only under
`<cgroup2 mount>/credwatch-test-<pid>/` and signals only processes it started, by pid.
"""

from __future__ import annotations

import dataclasses
import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
CLIENTS = TESTS / "clients"
sys.path.insert(0, str(TESTS / "fixtures"))
import credserver  # noqa: E402,F401  (path set just above; re-exported to the tests)

CLIENT_TIMEOUT = 120
READY_TIMEOUT = 30
METRIC_TIMEOUT = 15
# How long an exact count must stay exact after it is first reached. Nothing signals that no
# more events are coming, so an over-count that arrives late is only seen by looking again: the
# kernel's DNS statistics reach the series once a second, ring-buffer events within milliseconds.
SETTLE_SECONDS = 1.5


def cgroup2_mount() -> Path | None:
    """Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or …/unified on hybrid hosts)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype == "cgroup2":
            return Path(fields[4])
    return None


def wait_for(predicate, timeout=METRIC_TIMEOUT, interval=0.05, what="condition"):
    """Poll `predicate` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- cgroups -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Cgroup:
    """A leaf cgroup and the labels credwatch should give traffic from it."""

    path: Path
    pod: str
    container: str = ""

    @property
    def labels(self) -> dict[str, str]:
        return {"pod": self.pod, "container": self.container}


def remove_tree(path: Path, timeout: float = 10) -> None:
    """rmdir leaf-first. A cgroup stays busy for a moment after its last process is reaped."""
    if not path.exists():
        return
    for dirpath, _, _ in sorted(os.walk(path), key=lambda entry: -len(entry[0])):
        wait_for(lambda: _try_rmdir(dirpath), timeout, what=f"rmdir {dirpath}")


def _try_rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        if err.errno != errno.EBUSY:
            raise
        return False
    return True


class CgroupTree:
    """`<cgroup2 mount>/credwatch-test-<pid>`, and pod cgroups under it in the shapes kubelet
    creates with the systemd and the cgroupfs drivers."""

    def __init__(self, mount: Path):
        self.mount = mount
        self.root = mount / f"credwatch-test-{os.getpid()}"
        self.root.mkdir()

    def _leaf(self, relative: str) -> Path:
        path = self.root / relative
        path.mkdir(parents=True)
        return path

    def systemd_pod(self) -> Cgroup:
        uid, container = str(uuid.uuid4()), os.urandom(32).hex()
        qos = "kubepods.slice/kubepods-burstable.slice"
        pod_slice = f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
        path = self._leaf(f"{qos}/{pod_slice}/cri-containerd-{container}.scope")
        return Cgroup(path, pod=uid, container=container[:12])

    def cgroupfs_pod(self) -> Cgroup:
        uid, container = str(uuid.uuid4()), os.urandom(32).hex()
        path = self._leaf(f"kubepods/besteffort/pod{uid}/{container}")
        return Cgroup(path, pod=uid, container=container[:12])

    def plain(self) -> Cgroup:
        path = self._leaf(f"plain-{os.urandom(4).hex()}")
        return Cgroup(path, pod="/" + str(path.relative_to(self.mount)))

    def remove(self) -> None:
        remove_tree(self.root)


# --- processes ---------------------------------------------------------------------------------


class Processes:
    """Every process the tests start, so teardown can end exactly those, by pid."""

    def __init__(self):
        self._started: list[subprocess.Popen] = []

    def spawn(self, argv, cgroup: Path | None = None, **kwargs) -> subprocess.Popen:
        preexec = None
        if cgroup is not None:
            procs = str(cgroup / "cgroup.procs")

            def preexec():
                # Runs in the forked child before exec, with the server threads' locks possibly
                # held: only raw syscalls here. Moving itself in before exec means every socket
                # the client opens belongs to the cgroup.
                fd = os.open(procs, os.O_WRONLY)
                try:
                    os.write(fd, str(os.getpid()).encode())
                finally:
                    os.close(fd)

        proc = subprocess.Popen(argv, preexec_fn=preexec, **kwargs)
        self._started.append(proc)
        return proc

    def run_client(self, script: str, args, cgroup: Cgroup) -> dict:
        """Run a client from tests/clients inside `cgroup`; return its JSON report line."""
        proc = self.spawn([sys.executable, str(CLIENTS / script), *map(str, args)], cgroup.path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=CLIENT_TIMEOUT)
        assert proc.returncode == 0, f"{script} exited {proc.returncode}: {err[-2000:]}"
        return json.loads(out.strip().splitlines()[-1])

    def end_all(self) -> None:
        for proc in self._started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- the agent ---------------------------------------------------------------------------------


def agent_binary() -> Path:
    return Path(os.environ.get("CREDWATCH_BIN", REPO / "target/debug/credwatch"))


def demo_binary() -> Path:
    """credwatch-demo, built next to the agent (`cargo test` builds it for its own tests)."""
    binary = Path(os.environ.get("CREDWATCH_DEMO_BIN", agent_binary().parent / "credwatch-demo"))
    assert binary.exists(), f"{binary} is not built (cargo build -p credwatch-demo)"
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


OPENMETRICS = "application/openmetrics-text; version=1.0.0"
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def http_get(port: int, path: str, accept: str = OPENMETRICS) -> tuple[int, str]:
    """GET over loopback. The agent serves OpenMetrics when asked (as Prometheus asks, and as the
    strict parser here needs), else the classic text format."""
    # http.client rather than urllib: urllib would honour *_proxy variables.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


class Agent:
    def __init__(self, processes: Processes, workdir: Path, cgroup_root: Path, endpoints,
                 extra_args=(), log_level="debug", wait_ready=True):
        self.port = free_port()
        self.stdout_path, self.stderr_path = workdir / "agent.stdout", workdir / "agent.stderr"
        argv = [str(agent_binary()), "run", "--cgroup-path", str(cgroup_root),
                "--listen", f"127.0.0.1:{self.port}", "--log-level", log_level, *extra_args]
        for endpoint in endpoints:
            argv += ["--metadata-endpoint", endpoint]
        # Only the flags above configure it: CREDWATCH_* variables in the caller's environment
        # would otherwise add endpoints or change the storm rule.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDWATCH_")}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = processes.spawn(argv, stdout=out, stderr=err, env=env)
        path = "/readyz" if wait_ready else "/healthz"
        wait_for(lambda: self._answers(path), READY_TIMEOUT, interval=0.1, what=f"agent {path}")

    def _answers(self, path: str) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.stderr()[-3000:]}")
        try:
            return http_get(self.port, path)[0] == 200
        except OSError:
            return False

    def ready(self) -> bool:
        """/readyz answers 200 now."""
        return http_get(self.port, "/readyz")[0] == 200

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def metrics_text(self) -> str:
        status, body = http_get(self.port, "/metrics")
        assert status == 200, f"/metrics answered {status}"
        return body

    def scrape(self) -> Metrics:
        return Metrics.parse(self.metrics_text())

    def stop(self) -> int:
        """SIGTERM, the agent's graceful shutdown; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# --- metrics -----------------------------------------------------------------------------------


class Metrics(dict):
    """{(sample name, frozenset(label items)): value} from one OpenMetrics exposition.

    The sample name is a positional-only argument of the methods below, so that a label that is
    itself called `name` (credwatch_dns_name_queries_total) can be matched as a keyword."""

    @classmethod
    def parse(cls, text: str) -> Metrics:
        # The strict OpenMetrics parser: a malformed exposition fails the test that scraped it.
        return cls({
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        })

    def select(self, name: str, /, **labels) -> dict[frozenset, float]:
        wanted = set(labels.items())
        return {key[1]: value for key, value in self.items()
                if key[0] == name and wanted <= key[1]}

    def value(self, name: str, /, **labels) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
        return sum(self.select(name, **labels).values())

    def bucket(self, name: str, le: float, /, **labels) -> float:
        """Cumulative count of histogram `name` at bound `le`, compared as numbers since the
        exposition may write 14400 as "14400.0"."""
        return sum(value for key, value in self.select(name + "_bucket", **labels).items()
                   if float(dict(key)["le"]) == le)

    def describe(self, prefix: str = "credwatch_") -> str:
        """The agent's samples, for failure messages."""
        return "\n".join(f"{name}{dict(labels)} {value}" for (name, labels), value in sorted(
            self.items(), key=lambda item: (item[0][0], sorted(item[0][1])))
            if name.startswith(prefix))


def wait_for_count(read, expected: float, what: str, timeout=METRIC_TIMEOUT, interval=0.05,
                   explain=lambda: ""):
    """Poll `read()` until it reaches `expected`, then require exactly that, twice: at once, and
    again SETTLE_SECONDS later (a count that goes past `expected` late is an over-count too).
    `explain()` adds context to a failure. Returns the last value read."""
    last = {}

    def reached():
        last["value"] = read()
        return last["value"] >= expected

    try:
        wait_for(reached, timeout, interval, what=f"{what} >= {expected}")
    except AssertionError as err:
        raise AssertionError(f"{err} (last {last.get('value')}){explain()}") from None
    assert last["value"] == expected, f"{what}: {last['value']}, not exactly {expected}{explain()}"
    time.sleep(SETTLE_SECONDS)
    settled = read()
    assert settled == expected, \
        f"{what}: {settled} {SETTLE_SECONDS} s after it reached {expected} (a late over-count){explain()}"
    return settled


def wait_for_value(agent: Agent, expected: float, name: str, /, **labels) -> Metrics:
    """Poll until the agent's `name{labels}` reaches `expected`, then require exactly that, also
    SETTLE_SECONDS later (an agent that over-counts, even late, fails). Returns the last scrape."""
    last = {}

    def read():
        last["metrics"] = agent.scrape()
        return last["metrics"].value(name, **labels)

    def explain():
        return f"; agent exported:\n{last['metrics'].describe()}" if "metrics" in last else ""

    wait_for_count(read, expected, f"{name}{labels}", explain=explain)
    return last["metrics"]
