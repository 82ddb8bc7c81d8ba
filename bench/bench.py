#!/usr/bin/env python3
"""credwatch benchmarks, run by `cargo xtask bench [NAME...] [--quick]`.

Every comparison is measured side by side in the same run, alternating the order of the modes in
each round, and reported as the median of the rounds with its spread and as a ratio to the
baseline. Workloads run in a benchmark cgroup (never the root) on loopback only. The full run
rewrites the measured section of docs/benchmarks.md; --quick runs everything briefly so the harness
cannot rot, and asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# dnsmasq's address: one per run, so that two runs on one machine (other worktrees) neither
# collide on port 53 nor measure each other's server.
DNS_ADDR = f"127.77.{(os.getpid() >> 8) % 254 + 1}.{os.getpid() % 254 + 1}"
# Length of one burst of a paired comparison (tcp, dns, e2e request/response), in seconds.
# Interleaved turns (tcp, dns, request/response): one generator process moving between the modes'
# cgroups every TURN_MS, so that each comparison is between turns a few tens of ms apart.
TURN_MS = 20
# Modes of an interleaved benchmark that also measures the floor: empty programs at every hook
# credwatch uses (`credwatch-loadgen baseline --all-hooks`), what any agent observing there pays.
FLOOR_MODES = ("none", "empty", "credwatch", "none-again")
# Seconds between the scrape that reached an exactness row's count and the one it is judged on.
# DNS answers reach the series once a second (the kernel's statistics table is read then).
SETTLE_S = 1.5


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cgroup2_mount() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return Path(left.split()[4])
    raise SystemExit("bench: no cgroup v2 mount")


class Cgroups:
    """The benchmark's own subtree, removed (leaf first) on exit; processes are ours, by pid."""

    def __init__(self) -> None:
        self.root = cgroup2_mount() / f"credwatch-bench-{os.getpid()}"
        self.root.mkdir()
        self.procs: list[subprocess.Popen] = []

    def child(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def spawn(self, cgroup: Path, argv: list[str], cpu: int | None = None, **kw) -> subprocess.Popen:
        """Starts argv inside `cgroup` (joined before exec, so every socket it creates is the
        cgroup's), pinned to `cpu` if given."""
        procs = str(cgroup / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        p = subprocess.Popen(argv, preexec_fn=join, **kw)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for agent in Agent.live:
            if agent.proc.poll() is None:
                agent.stop()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        dirs = sorted((d for d in self.root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts))
        for d in [*dirs, self.root]:
            with contextlib.suppress(OSError):
                d.rmdir()


def wait_listening(port: int, deadline: float = 10.0) -> None:
    """Until a TCP socket listens on the port (a probe connection would be taken as a client)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


def wait_http(url: str, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = re.match(r"([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)", line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def total(metrics: dict, name: str, **want) -> float:
    return sum(v for (n, l), v in metrics.items() if n == name and all((k, w) in l for k, w in want.items()))


class Agent:
    """`credwatch run` attached to the benchmark cgroup, or with `baseline`, `binary` being
    credwatch-loadgen: its empty programs (unshipped-ebpf, never in the credwatch binary)."""

    live: list["Agent"] = []

    def __init__(self, binary: Path, cgroup: Path, extra: list[str], baseline: bool = False, all_hooks: bool = False):
        self.port = free_port()
        Agent.live.append(self)
        if baseline:
            argv = [str(binary), "baseline", "--cgroup-path", str(cgroup), *(["--all-hooks"] if all_hooks else [])]
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            line = self.proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError("baseline program did not attach")
        else:
            argv = [str(binary), "--log-level", "warn", "run", "--cgroup-path", str(cgroup),
                    "--listen", f"127.0.0.1:{self.port}", "--no-default-endpoints", *extra]
            self.proc = subprocess.Popen(argv)
            wait_http(f"http://127.0.0.1:{self.port}/readyz")

    def prog_ids(self) -> dict[int, str]:
        """The programs this process holds, from its file descriptors (other tests may run)."""
        ids = {}
        fds = Path(f"/proc/{self.proc.pid}/fd")
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == "anon_inode:bpf-prog":
                    info = Path(f"/proc/{self.proc.pid}/fdinfo/{fd.name}").read_text()
                    m = re.search(r"prog_id:\s+(\d+)", info)
                    if m:
                        ids[int(m.group(1))] = ""
        for prog in json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout or "[]"):
            if prog["id"] in ids:
                ids[prog["id"]] = prog.get("name", "")
        return ids

    def stats(self, names: set[str]) -> tuple[int, int]:
        """Summed (run_time_ns, run_cnt) of this process's programs with these names."""
        ids = {i for i, n in self.prog_ids().items() if n in names}
        progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout)
        ns = sum(p.get("run_time_ns", 0) for p in progs if p["id"] in ids)
        cnt = sum(p.get("run_cnt", 0) for p in progs if p["id"] in ids)
        return ns, cnt

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def bpf_stats():
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = path.read_text().strip()
    path.write_text("1")
    try:
        yield
    finally:
        path.write_text(before)


class BpftraceUnavailable(Exception):
    pass


class Bpftrace:
    """bench/compare.bt under bpftrace: what a user would run instead of credwatch.

    Its tracepoints need tracefs, which this kind of machine does not mount: bpftrace runs in a
    private mount namespace of its own (unshare execs sh, which mounts tracefs there and execs
    bpftrace), so the pid is bpftrace's and the mount goes with it. Ready once bpftrace says it
    has attached every probe; stopped with SIGINT, after which it prints its maps."""

    SCRIPT = ROOT / "bench" / "compare.bt"
    SHELL = 'mount -t tracefs nodev /sys/kernel/tracing && exec bpftrace "$0" "$1"'

    def __init__(self, md_port: int, deadline: float = 60.0):
        if not shutil.which("bpftrace") or not shutil.which("unshare"):
            raise BpftraceUnavailable("bpftrace or unshare not installed (scripts/setup.sh installs bpftrace)")
        env = {**os.environ, "__BPFTRACE_NOTIFY_PROBES_ATTACHED": "1", "BPFTRACE_MAP_KEYS_MAX": "65536"}
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", self.SHELL,
                                      str(self.SCRIPT), str(md_port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     preexec_fn=self._die_with_parent)
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        # "Attaching N probes..." is printed before bpftrace loads and attaches them; the notice
        # below (bpftrace's own test hook, on stderr, merged here) comes after the last one.
        end = time.monotonic() + deadline
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=max(end - time.monotonic(), 0))
            except queue.Empty:
                line = None
            if line is None:
                self._abort()
                raise BpftraceUnavailable(f"bpftrace did not attach: {self._said(seen)}")
            seen.append(line.strip())
            if line.strip() == "__BPFTRACE_NOTIFY_PROBES_ATTACHED" and any(s.startswith("Attaching ") for s in seen):
                log(f"bpftrace (pid {self.proc.pid}): {self._said(seen)}")
                return

    @staticmethod
    def _die_with_parent() -> None:
        """SIGINT to bpftrace if the benchmark dies first (kept across exec), so its probes go too."""
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    @staticmethod
    def _said(lines: list[str]) -> str:
        # bpftrace 0.17 always complains that it cannot raise RLIMIT_MEMLOCK: harmless, BPF
        # memory is charged to the memory cgroup on this kernel
        return " / ".join(l.strip() for l in lines if l.strip() and "RLIMIT_MEMLOCK" not in l)[-800:]

    def _abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=10)

    def stop(self) -> dict[str, dict[int, int]]:
        """SIGINT to bpftrace (by pid), then its maps: {map: {cgroup id: count}}."""
        # A SIGINT that lands just before bpftrace's event loop starts waiting only sets its flag
        # and the wait then blocks: repeat it until bpftrace exits.
        end = time.monotonic() + 30
        while self.proc.poll() is None and time.monotonic() < end:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=1)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)
        out = []
        while not self.lines.empty():
            line = self.lines.get()
            if line is not None:
                out.append(line)
        maps: dict[str, dict[int, int]] = {}
        for line in out:
            m = re.match(r"@(\w+)\[(\d+)\]: (\d+)$", line.strip())
            if m:
                maps.setdefault(m.group(1), {})[int(m.group(2))] = int(m.group(3))
        if self.proc.returncode not in (0, -signal.SIGINT):
            log(f"bpftrace exited with {self.proc.returncode}: {self._said(out)}")
        return maps

    @staticmethod
    def counted(maps: dict[str, dict[int, int]], cgroups: list[Path]) -> dict[str, int]:
        """The script's counts summed over these cgroups (a cgroup v2 id is its directory's inode)."""
        ids = {os.stat(c).st_ino for c in cgroups}
        return {name: sum(v for k, v in per.items() if k in ids) for name, per in maps.items()}


def lo_packets() -> int:
    """Packets sent on loopback so far (each is also received: one of each per packet)."""
    return int(Path("/sys/class/net/lo/statistics/tx_packets").read_text())


def tool_cpu(pid) -> tuple[float, float]:
    """CPU seconds a tool has used so far: (the run time of the BPF programs it holds, which
    needs kernel.bpf_stats_enabled; its process, user + system). Zeros without a tool."""
    if pid is None:
        return 0.0, 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    ids = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == "anon_inode:bpf-prog":
                m = re.search(r"prog_id:\s+(\d+)", Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text())
                if m:
                    ids.add(int(m.group(1)))
    progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout or "[]")
    return sum(p.get("run_time_ns", 0) for p in progs if p["id"] in ids) / 1e9, cpu


QUICK_VERDICT = "not judged (quick)"


def verdict(median: float, ok, gate: bool, quick: bool) -> str:
    """met / MISSED against the row's target. A quick run (one short round) decides only the
    exactness and loss-accounting rows: its speed and footprint figures are too short to judge."""
    if ok is None:
        return ""
    if quick and not gate:
        return QUICK_VERDICT
    return "met" if ok(median) else "MISSED"


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.rounds = 1 if args.quick else args.rounds
        self.seconds = 1 if args.quick else args.seconds
        self.binary = Path(args.binary)
        self.loadgen_bin = Path(args.loadgen)
        self.demo_bin = Path(args.demo)
        self.compare_binary = Path(args.compare_binary) if args.compare_binary else None
        cpus = sorted(os.sched_getaffinity(0))
        # The compiled generators run on one CPU (the last one we may use), their server side and
        # dnsmasq with them: a ping-pong between two threads on one core does not depend on
        # cross-CPU wake-ups and leaves the other core(s) to the agent and the rest of the machine.
        self.cpu = None if args.pin_cpu == -1 or len(cpus) < 2 else (cpus[-1] if args.pin_cpu is None else args.pin_cpu)
        self._dnsmasq: subprocess.Popen | None = None
        self.cg = Cgroups()
        self.rows: list[dict] = []

    # -- helpers -------------------------------------------------------------------------------

    def record(self, bench: str, figure: str, values: list[float], unit: str, target: str = "", ok=None,
               gate: bool = False):
        """One result row. `gate`: an exactness or loss-accounting row (exported counts against
        generated ones), which does not depend on speed: a miss fails the run, quick or not."""
        med = statistics.median(values)
        ci = median_ci(values) if unit == "x" else None
        if ci:
            # A ratio whose interval straddles its target is not decided by this run.
            figure = f"{figure} (95% CI of the median {ci[0]:.3f}–{ci[1]:.3f})"
        row = {"bench": bench, "figure": figure, "median": med, "min": min(values), "max": max(values),
               "unit": unit, "n": len(values), "target": target,
               "verdict": verdict(med, ok, gate, self.quick), "gate": gate}
        self.rows.append(row)
        log(f"{bench}: {figure} = {med:.4g} {unit} (min {min(values):.4g}, max {max(values):.4g}, n={len(values)}) {row['verdict']}")

    def alternate(self, modes: list[str]):
        """Yields (round, mode) with the mode order rotated each round."""
        for r in range(self.rounds):
            order = modes[r % len(modes):] + modes[: r % len(modes)]
            for mode in order:
                yield r, mode

    def iperf(self, cgroup: Path, seconds: float) -> float:
        port = free_port()
        server = self.cg.spawn(cgroup, ["iperf3", "-s", "-1", "-p", str(port), "-B", "127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(port)
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                             capture_output=True, text=True, preexec_fn=self._join(cgroup))
        server.wait(timeout=10)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9

    def loadgen(self, cgroup: Path, args: list[str], timeout: float = 300) -> dict:
        """Runs credwatch-loadgen in `cgroup`, pinned, and returns its JSON result line."""
        p = self.cg.spawn(cgroup, [str(self.loadgen_bin), *args], cpu=self.cpu, stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"credwatch-loadgen {' '.join(args)} failed ({p.returncode})")
        return json.loads(out.strip().splitlines()[-1])

    def interleaved(self, cgs: dict[str, Path], args: list[str]) -> tuple[dict[str, list[float]], dict[str, dict]]:
        """credwatch-loadgen in turns of TURN_MS from each mode's cgroup (it moves itself; see
        loadgen/src/interleave.rs): per mode, the rate of each turn (operations per second) and
        the generator's totals. Turn i of every mode ran within a few tens of ms of each other."""
        modes = list(cgs)
        rounds = 3 if self.quick else self.turn_rounds()
        r = self.loadgen(cgs[modes[0]], [*args, "--cgroups", ",".join(str(cgs[m]) for m in modes),
                                         "--rounds", str(rounds), "--turn-ms", str(TURN_MS)])
        rates = {m: [ok / s for ok, s in zip(r["ok"][i], r["seconds"][i])] for i, m in enumerate(modes)}
        return rates, {m: r["totals"][i] for i, m in enumerate(modes)}

    def turn_rounds(self) -> int:
        """Rounds of interleaved turns: the same time per mode as rounds × seconds."""
        return max(3, round(self.rounds * self.seconds * 1000 / TURN_MS))

    def record_interleaved(self, bench: str, rates: dict[str, list[float]], what: str, unit: str,
                           target: float | None, ratio_prefix: str = "") -> None:
        """Rates per mode, and each mode's ratio to `none` turn by turn (the target, if any, on
        credwatch's; None where the target is against the floor, `record_floor`), and the A/A
        check's; `ratio_prefix` names the ratios where the benchmark measures more than one thing."""
        for mode, vals in rates.items():
            self.record(bench, f"{what}, {mode}", vals, unit)
        for mode in rates:
            if mode == "none":
                continue
            ratios = [c / n for c, n in zip(rates[mode], rates["none"])]
            if mode == "credwatch" and target is not None:
                self.record(bench, f"{ratio_prefix}credwatch / none", ratios, "x", f"≥ {target}", lambda v: v >= target)
            elif mode == "none-again":
                # An A/A check: a second cgroup with nothing attached; 1 when the method is fair.
                self.record(bench, f"{ratio_prefix}none-again / none (A/A check)", ratios, "x", "within ±0.005",
                            lambda v: abs(v - 1) <= 0.005)
            else:
                self.record(bench, f"{ratio_prefix}{mode} / none", ratios, "x")

    def record_floor(self, bench: str, rates: dict[str, list[float]], ratio_prefix: str = "",
                     target: float | None = None) -> None:
        """credwatch against empty programs at the same hooks, turn by turn: what credwatch's own
        work costs, above what any program there costs. `target`: the least this ratio may be
        (where a target is set against the floor rather than against no program at all)."""
        ratios = [c / e for c, e in zip(rates["credwatch"], rates["empty"])]
        if target is None:
            self.record(bench, f"{ratio_prefix}credwatch / empty programs", ratios, "x")
        else:
            self.record(bench, f"{ratio_prefix}credwatch / empty programs", ratios, "x", f"≥ {target}",
                        lambda v: v >= target)

    @contextlib.contextmanager
    def floor_comparison(self, name: str, md: int):
        """Sibling cgroups for an interleaved comparison (FLOOR_MODES) and what runs in them: the
        agent attached to `credwatch` only; no program at all in `none` and `none-again` (the A/A
        check; credwatch attaches nothing outside its cgroup); empty programs at every hook
        credwatch uses in `empty` (the floor). Yields the cgroups and the agent; stops both
        processes after."""
        cgs = {mode: self.cg.child(f"{name}/{mode}/pod0") for mode in FLOOR_MODES}
        agent = Agent(self.binary, cgs["credwatch"].parent, ["--metadata-endpoint", f"127.0.0.1:{md}"])
        try:
            floor = Agent(self.loadgen_bin, cgs["empty"].parent, [], baseline=True, all_hooks=True)
            try:
                yield cgs, agent
            finally:
                floor.stop()
        finally:
            agent.stop()

    @contextlib.contextmanager
    def pinned(self, proc: subprocess.Popen):
        """Runs `proc` (a server the generator talks to) on the generator's CPU meanwhile."""
        if self.cpu is None:
            yield
            return
        before = os.sched_getaffinity(proc.pid)
        os.sched_setaffinity(proc.pid, {self.cpu})
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, before)

    @staticmethod
    def _join(cgroup: Path):
        procs = str(cgroup / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        return join

    def credserver(self, lifetime: int) -> tuple[subprocess.Popen, int]:
        p = subprocess.Popen([sys.executable, str(FIXTURES / "credserver.py"), "--port", "0", "--lifetime", str(lifetime)],
                             stdout=subprocess.PIPE, text=True)
        self.cg.procs.append(p)
        line = p.stdout.readline()
        m = re.match(r"READY (\d+)", line)
        if not m:
            raise RuntimeError(f"credserver: {line!r}")
        return p, int(m.group(1))

    def dnsmasq(self) -> subprocess.Popen:
        """One dnsmasq on DNS_ADDR:53 for the whole run (a second one could not bind)."""
        if self._dnsmasq is not None and self._dnsmasq.poll() is None:
            return self._dnsmasq
        p = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", f"--listen-address={DNS_ADDR}",
                              "--bind-interfaces", "--port=53", "--address=/bench.test/192.0.2.1", "--cache-size=0",
                              "--dns-forward-max=10000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.cg.procs.append(p)
        time.sleep(0.3)
        if p.poll() is not None:
            raise RuntimeError(f"dnsmasq exited ({p.returncode}): is {DNS_ADDR}:53 taken?")
        self._dnsmasq = p
        return p

    def storm_clients(self, port: int, clients: int, requests: int, rate: float) -> list[subprocess.Popen]:
        out = []
        for i in range(clients):
            cg = self.cg.child(f"storm/pod{i}")
            out.append(self.cg.spawn(cg, [str(self.demo_bin), "demo-client", "--endpoint", f"127.0.0.1:{port}",
                                          "--rate", str(rate), "--requests", str(requests)]))
        return out

    @staticmethod
    def wait_ok(p: subprocess.Popen, timeout: float) -> None:
        """Waits for a load client and fails the benchmark if it failed: a client that never ran
        would otherwise read as zero traffic (a 0-ns slow path, an exactness row that misses)."""
        rc = p.wait(timeout=timeout)
        if rc != 0:
            raise RuntimeError(f"load client {p.args!r} exited {rc}")

    def dns_flood(self, clients: int, queries: int) -> list[subprocess.Popen]:
        code = (
            "import socket,struct,sys\n"
            f"n=int(sys.argv[1]); s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2); ok=0\n"
            "q=lambda i: struct.pack('>HHHHHH',i&0xffff,0x0100,1,0,0,0)+b'\\x05bench\\x04test\\x00'+struct.pack('>HH',1,1)\n"
            "for i in range(n):\n"
            f"    s.sendto(q(i),('{DNS_ADDR}',53))\n"
            "    try: s.recv(512); ok+=1\n"
            "    except OSError: pass\n"
            "print(ok)\n"
        )
        return [self.cg.spawn(self.cg.child(f"dns/pod{i}"), [sys.executable, "-c", code, str(queries)], stdout=subprocess.PIPE, text=True)
                for i in range(clients)]

    def linklocal_flood(self, port: int, packets: int) -> subprocess.Popen:
        """`packets` NTP-sized datagrams to 127.0.0.1:`port` from a pod cgroup, as fast as they go."""
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                "p=b'\\x23'+bytes(47)\n"
                "for _ in range(int(sys.argv[2])): s.sendto(p,('127.0.0.1',int(sys.argv[1])))\n")
        return self.cg.spawn(self.cg.child("linklocal/pod"), [sys.executable, "-c", code, str(port), str(packets)])

    # -- benchmarks ----------------------------------------------------------------------------

    def bench_fastpath(self) -> None:
        """Kernel ns per program run on bulk traffic the programs do not care about."""
        cg = self.cg.child("fastpath")
        md = free_port()
        per_mode = {"empty": [], "credwatch": []}
        if self.compare_binary:
            per_mode["other build"] = []
        with bpf_stats():
            for _, mode in self.alternate(list(per_mode)):
                if mode == "empty":
                    agent = Agent(self.loadgen_bin, cg, [], baseline=True)
                else:
                    binary = self.binary if mode == "credwatch" else self.compare_binary
                    agent = Agent(binary, cg, ["--metadata-endpoint", f"127.0.0.1:{md}"])
                names = {"cw_bench_empty"} if mode == "empty" else {"cw_skb_egress", "cw_skb_ingress"}
                ns0, cnt0 = agent.stats(names)
                self.iperf(cg, self.seconds)
                ns1, cnt1 = agent.stats(names)
                agent.stop()
                per_mode[mode].append((ns1 - ns0) / max(cnt1 - cnt0, 1))
        self.record("fastpath", "empty cgroup_skb program, ns/packet", per_mode["empty"], "ns")
        self.record("fastpath", "credwatch cgroup_skb programs, ns/packet", per_mode["credwatch"], "ns")
        ratios = [c / e for c, e in zip(per_mode["credwatch"], per_mode["empty"])]
        self.record("fastpath", "credwatch / empty", ratios, "x", "≤ 1.5", lambda v: v <= 1.5)
        if self.compare_binary:
            other = per_mode["other build"]
            log(f"fastpath: other build = {self.compare_binary}")
            self.record("fastpath", "other build's cgroup_skb programs, ns/packet", other, "ns")
            self.record("fastpath", "other build / empty",
                        [o / e for o, e in zip(other, per_mode["empty"])], "x")
            self.record("fastpath", "credwatch / other build",
                        [c / o for c, o in zip(per_mode["credwatch"], other)], "x")

    def bench_slowpath(self) -> None:
        """Kernel ns per program run while the traffic is metadata requests or DNS queries."""
        cg = self.cg.child("slowpath")
        with bpf_stats():
            _, port = self.credserver(840)
            agent = Agent(self.binary, self.cg.root, ["--metadata-endpoint", f"127.0.0.1:{port}"])
            names = {"cw_skb_egress", "cw_skb_ingress"}
            ns0, cnt0 = agent.stats(names)
            for p in self.storm_clients(port, 2, 20 if self.quick else 300, 1000):
                self.wait_ok(p, 120)
            ns1, cnt1 = agent.stats(names)
            self.record("slowpath", "metadata traffic, ns/packet", [(ns1 - ns0) / max(cnt1 - cnt0, 1)], "ns")
            self.dnsmasq()
            ns0, cnt0 = agent.stats(names)
            for p in self.dns_flood(2, 100 if self.quick else 5000):
                self.wait_ok(p, 120)
            ns1, cnt1 = agent.stats(names)
            self.record("slowpath", "DNS traffic, ns/packet", [(ns1 - ns0) / max(cnt1 - cnt0, 1)], "ns")
            agent.stop()
            # Link-local: UDP to a time sync stand-in (--ntp-endpoint on loopback), the egress
            # program only (the sink, outside the benchmark cgroup, runs no program).
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
                sink.bind(("127.0.0.1", 0))
                ntp = sink.getsockname()[1]
                agent = Agent(self.binary, self.cg.root, ["--metadata-endpoint", f"127.0.0.1:{port}",
                                                          "--ntp-endpoint", f"127.0.0.1:{ntp}"])
                egress = {"cw_skb_egress"}
                ns0, cnt0 = agent.stats(egress)
                self.wait_ok(self.linklocal_flood(ntp, 1000 if self.quick else 100_000), 120)
                ns1, cnt1 = agent.stats(egress)
                self.record("slowpath", "link-local traffic, ns/packet",
                            [(ns1 - ns0) / max(cnt1 - cnt0, 1)], "ns")
                agent.stop()
        del cg

    def bench_e2e(self) -> None:
        """Loopback throughput and DNS query rate without and with the agent, and with what a user
        would run instead: tcpdump writing a capture, and a bpftrace script counting the same
        metadata and DNS events per cgroup (bench/compare.bt); then the request/response rate
        without and with the agent, in paired bursts."""
        cg = self.cg.child("e2e")
        _, md = self.credserver(840)  # the metadata endpoint of the canary requests (loopback)
        self.dnsmasq()
        modes = ["none", "credwatch", "tcpdump", "bpftrace"]
        try:
            Bpftrace(md).stop()
        except BpftraceUnavailable as e:
            cannot_run(f"the bpftrace comparison: {e}")
            modes.remove("bpftrace")
        bulk = {m: [] for m in modes}
        dns = {m: [] for m in modes}
        dns_cpu = {m: [] for m in modes if m in ("credwatch", "bpftrace")}  # µs per query
        dns_cpu_split = {m: [] for m in dns_cpu}  # (BPF programs, process), µs per query
        bulk_cpu = {m: [] for m in dns_cpu}  # ns per loopback packet
        dns_clients, dns_queries = (2, 100) if self.quick else (4, 5000)
        cpu_queries = dns_queries // 4  # per client, in the second flood that measures tool CPU
        canary_n = 5 if self.quick else 20
        missed = []  # |bpftrace's count − generated|, per round
        for _, mode in self.alternate(modes):
            with self.mode(mode, cg, md) as tool:
                bulk[mode].append(self.iperf(cg, self.seconds))
                if mode in bulk_cpu:
                    # What the tool itself spends per packet, from a short second transfer with BPF
                    # stats on (they add a clock read per program run, so not during the first).
                    with bpf_stats():
                        c0, p0 = tool_cpu(tool["pid"]), lo_packets()
                        self.iperf(cg, 1 if self.quick else 2)
                        c1, p1 = tool_cpu(tool["pid"]), lo_packets()
                    bulk_cpu[mode].append(sum(b - a for a, b in zip(c0, c1)) / max(p1 - p0, 1) * 1e9)
                t0 = time.monotonic()
                flood = self.dns_flood(dns_clients, dns_queries)
                answered = sum(int(p.communicate(timeout=300)[0].strip() or 0) for p in flood)
                dns[mode].append(answered / (time.monotonic() - t0))
                sent = dns_clients * dns_queries
                if mode in dns_cpu:
                    # What the tool itself spends per query, from a second, shorter flood with BPF
                    # stats on (they add clock reads to every program run, which the modes without
                    # BPF programs would not pay, so not during the measured flood).
                    with bpf_stats():
                        c0 = tool_cpu(tool["pid"])
                        flood = self.dns_flood(dns_clients, cpu_queries)
                        answered += sum(int(p.communicate(timeout=300)[0].strip() or 0) for p in flood)
                        c1 = tool_cpu(tool["pid"])
                    sent += dns_clients * cpu_queries
                    per_query = [(b - a) / (dns_clients * cpu_queries) * 1e6 for a, b in zip(c0, c1)]
                    dns_cpu[mode].append(sum(per_query))
                    dns_cpu_split[mode].append(per_query)
                if mode == "bpftrace":
                    self.canary(cg, md, canary_n)
            if mode == "bpftrace":
                pods = [self.cg.child(f"dns/pod{i}") for i in range(dns_clients)]
                got_dns, got_cg = Bpftrace.counted(tool["maps"], pods), Bpftrace.counted(tool["maps"], [cg])
                log(f"bpftrace counted: DNS flood {got_dns} (sent {sent}, answered {answered}); "
                    f"e2e cgroup {got_cg} (canary: {canary_n} DNS queries, {canary_n} metadata requests)")
                missed.append(abs(got_dns.get("dns_queries", 0) - sent) + abs(got_dns.get("dns_responses", 0) - answered)
                              + abs(got_cg.get("dns_queries", 0) - canary_n) + abs(got_cg.get("dns_responses", 0) - canary_n)
                              + abs(got_cg.get("metadata_requests", 0) - canary_n)
                              + (0 if got_cg.get("metadata_responses", 0) >= canary_n else 1))

        def ratio(per: dict, a: str, b: str) -> list[float]:
            return [x / y for x, y in zip(per[a], per[b])]

        def overhead_ratio(per: dict, tool: str) -> list[float]:
            """(1 − credwatch/none) / (1 − tool/none), per round."""
            return [(1 - c) / max(1 - t, 1e-9) for c, t in zip(ratio(per, "credwatch", "none"), ratio(per, tool, "none"))]

        def median_overhead_ratio(per: dict, tool: str) -> list[float]:
            """(1 − median credwatch/none) / (1 − median tool/none): one value, from the medians, so
            that one round whose tool overhead is lost in the noise cannot make it ±1e8; NaN (not
            decided) when the tool's median overhead is not above zero."""
            c = 1 - statistics.median(ratio(per, "credwatch", "none"))
            t = 1 - statistics.median(ratio(per, tool, "none"))
            return [c / t if t > 0 else float("nan")]

        for mode, vals in bulk.items():
            self.record("e2e", f"bulk throughput, {mode}", vals, "Gbit/s")
        self.record("e2e", "bulk credwatch / none", ratio(bulk, "credwatch", "none"), "x", "≥ 0.99", lambda v: v >= 0.99)
        self.record("e2e", "bulk tcpdump / none", ratio(bulk, "tcpdump", "none"), "x")
        self.record("e2e", "credwatch overhead / tcpdump overhead", overhead_ratio(bulk, "tcpdump"), "x", "≤ 0.33", lambda v: v <= 0.33)
        for mode, vals in bulk_cpu.items():
            self.record("e2e", f"bulk: {mode}'s CPU per packet (its BPF programs + its process)", vals, "ns")
        if "bpftrace" in modes:
            self.record("e2e", "bulk bpftrace / none", ratio(bulk, "bpftrace", "none"), "x")
            # The tools' own cost per event decides "below bpftrace's": the throughput medians of
            # 5 rounds move more between rounds than either tool costs.
            self.record("e2e", "bulk: CPU per packet, credwatch / bpftrace", ratio(bulk_cpu, "credwatch", "bpftrace"), "x",
                        "< 1", lambda v: v < 1)
            self.record("e2e", "bulk: credwatch overhead / bpftrace overhead (throughput, from medians)",
                        median_overhead_ratio(bulk, "bpftrace"), "x")
            self.record("e2e", "bulk credwatch / bpftrace", ratio(bulk, "credwatch", "bpftrace"), "x")
        for mode, vals in dns.items():
            self.record("e2e", f"DNS queries/s, {mode}", vals, "q/s")
        for mode, vals in dns_cpu.items():
            self.record("e2e", f"DNS: {mode}'s CPU per query (its BPF programs + its process)", vals, "µs")
            self.record("e2e", f"DNS: {mode}'s CPU per query, BPF programs only", [b for b, _ in dns_cpu_split[mode]], "µs")
        if "bpftrace" in dns_cpu:
            self.record("e2e", "DNS: CPU per query, credwatch / bpftrace", ratio(dns_cpu, "credwatch", "bpftrace"), "x",
                        "< 1", lambda v: v < 1)
        for mode in modes[1:]:
            self.record("e2e", f"DNS {mode} / none", ratio(dns, mode, "none"), "x")
        self.record("e2e", "DNS: credwatch overhead / tcpdump overhead (from medians)", median_overhead_ratio(dns, "tcpdump"), "x",
                    "≤ 0.33", lambda v: v <= 0.33)
        if "bpftrace" in modes:
            self.record("e2e", "DNS: credwatch overhead / bpftrace overhead (throughput, from medians)",
                        median_overhead_ratio(dns, "bpftrace"), "x")
            self.record("e2e", "DNS credwatch / bpftrace", ratio(dns, "credwatch", "bpftrace"), "x")
            self.record("e2e", "bpftrace's counts − generated (DNS flood, canary)", missed, "events", "0",
                        lambda v: v == 0, gate=True)
        self.request_response(md)
        self.bulk_interleaved(md)

    def canary(self, cg: Path, md: int, n: int) -> None:
        """From the e2e cgroup, after the workload: n DNS queries and n metadata requests (each
        on a fresh connection), which the bpftrace script must have counted."""
        code = (
            "import http.client,socket,struct,sys\n"
            "n,md=int(sys.argv[1]),int(sys.argv[2]); s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n"
            "for i in range(n):\n"
            f"    s.sendto(struct.pack('>HHHHHH',i,0x0100,1,0,0,0)+b'\\x05bench\\x04test\\x00'+struct.pack('>HH',1,1),('{DNS_ADDR}',53)); s.recv(512)\n"
            "    c=http.client.HTTPConnection('127.0.0.1',md,timeout=5); c.request('GET','/latest/meta-data/iam/security-credentials/')\n"
            "    c.getresponse().read(); c.close()\n"
        )
        subprocess.run([sys.executable, "-c", code, str(n), str(md)], check=True, timeout=60, preexec_fn=self._join(cg))

    def request_response(self, md: int, bench: str = "e2e") -> None:
        """1-byte TCP ping-pong between two threads of one process (credwatch-loadgen tcp-rr), in
        interleaved turns from a cgroup with the agent attached and a sibling with nothing."""
        with self.floor_comparison("e2e-rr", md) as (cgs, _):
            self.loadgen(cgs["none"], ["tcp-rr", "--seconds", "0.2"])  # warm-up
            rates, _ = self.interleaved(cgs, ["tcp-rr"])
        rates = {m: [r / 1000 for r in vals] for m, vals in rates.items()}
        self.record_interleaved(bench, rates, "request/response", "k/s", None, "request/response ")
        # The target is against the floor: empty programs at these hooks already cost this
        # workload more than a target against no program allowed (docs/benchmarks.md).
        self.record_floor(bench, rates, "request/response ", target=0.99)

    def bench_rr(self) -> None:
        """The request/response rows of e2e alone (minutes instead of e2e's quarter hour), under
        their own name so that e2e's other rows stay in docs/benchmarks.md."""
        self.request_response(free_port(), bench="rr")

    def bulk_interleaved(self, md: int) -> None:
        """Bulk throughput as iperf3 measures it (one loopback connection, 64 KiB writes), from
        credwatch-loadgen tcp-bulk in interleaved turns: the agent attached vs nothing."""
        with self.floor_comparison("e2e-bulk", md) as (cgs, _):
            rates, totals = self.interleaved(cgs, ["tcp-bulk"])
        for mode, t in totals.items():
            # Every byte written (timed turns and warm-up) reached the reader.
            assert t["received"] >= t["timed_bytes"], (mode, t)
        gbit = {m: [r * 65536 * 8 / 1e9 for r in vals] for m, vals in rates.items()}
        self.record_interleaved("e2e", gbit, "bulk (tcp-bulk, interleaved)", "Gbit/s", 0.99, "bulk (tcp-bulk, interleaved) ")
        self.record_floor("e2e", gbit, "bulk (tcp-bulk, interleaved) ")

    @contextlib.contextmanager
    def mode(self, mode: str, cg: Path, md: int):
        """Runs the tool of this mode around the workload; yields a dict, which gets the
        bpftrace script's maps when it stops."""
        result: dict = {}
        if mode == "none":
            yield result
        elif mode == "credwatch":
            # the benchmark's whole subtree: the e2e cgroup and the DNS flood's pod cgroups
            agent = Agent(self.binary, self.cg.root, ["--metadata-endpoint", f"127.0.0.1:{md}"])
            result["pid"] = agent.proc.pid
            try:
                yield result
            finally:
                agent.stop()
        elif mode == "tcpdump":
            pcap = Path(tempfile.mkdtemp()) / "capture.pcap"
            p = subprocess.Popen(["tcpdump", "-i", "lo", "-w", str(pcap), "-U", "tcp or udp port 53"], stderr=subprocess.PIPE, text=True)
            p.stderr.readline()  # "listening on lo ..." once the capture is open
            try:
                yield result
            finally:
                p.terminate()
                p.wait()
                shutil.rmtree(pcap.parent, ignore_errors=True)
        elif mode == "bpftrace":
            bt = Bpftrace(md)
            result["pid"] = bt.proc.pid
            try:
                yield result
            finally:
                result["maps"] = bt.stop()

    def bench_dns(self) -> None:
        """DNS query rate of one loopback generator (credwatch-loadgen dns-udp, one query in
        flight) against dnsmasq, in interleaved turns without the agent, with empty programs at
        credwatch's hooks (the floor) and with the agent; exported counts equal answered."""
        dnsmasq = self.dnsmasq()
        md = free_port()
        query = ["dns-udp", "--server", f"{DNS_ADDR}:53", "--name", "bench.test"]
        with self.floor_comparison("dns", md) as (cgs, agent):
            with self.pinned(dnsmasq):
                self.loadgen(cgs["none"], [*query, "--count", str(100 if self.quick else 5000)])  # warm-up
                rates, totals = self.interleaved(cgs, query)
            want = totals["credwatch"]["answered"]
            m = self.settled(agent, counted_or_lost(want, self.dns_answered))
        lost = total(m, "credwatch_events_lost_total")
        timeouts = sum(t["timeouts"] for t in totals.values())
        if timeouts:
            log(f"dns: {timeouts} queries unanswered")
        self.record_interleaved("dns", rates, "queries/s", "q/s", 0.97)
        self.record_floor("dns", rates)
        exact = self.dns_answered(m) - want
        self.record("dns", "exported − answered", [exact], "queries", "0 or ≥ −lost", lambda v: v == 0 or 0 <= -v <= lost,
                    gate=True)
        self.record("dns", "events lost", [lost], "events")

    @staticmethod
    def dns_answered(m: dict) -> float:
        return sum(v for (n, l), v in m.items() if n == "credwatch_dns_requests_total" and ("rcode", "timeout") not in l)

    def bench_tcp(self) -> None:
        """Connection rate (connect, accept, close; credwatch-loadgen tcp-connect) on loopback, in
        interleaved turns without the agent, with empty programs at credwatch's hooks (the floor
        any agent observing there pays) and with the agent; exported connects and accepts equal
        the generator's."""
        md = free_port()
        with self.floor_comparison("tcp", md) as (cgs, agent):
            # The warm-up also fills the TIME_WAIT table (net.ipv4.tcp_max_tw_buckets), so that
            # every turn closes its connections the same way.
            self.loadgen(cgs["none"], ["tcp-connect", "--count", str(100 if self.quick else 20000)])
            rates, totals = self.interleaved(cgs, ["tcp-connect"])
            want = totals["credwatch"]["made"]
            m = self.settled(agent, counted_or_lost(2 * want, lambda m: total(m, "credwatch_tcp_accepts_total")
                                                    + total(m, "credwatch_tcp_connects_total", result="established")))
        connects = total(m, "credwatch_tcp_connects_total", result="established")
        accepts = total(m, "credwatch_tcp_accepts_total")
        lost = total(m, "credwatch_events_lost_total")
        self.record_interleaved("tcp", rates, "connections/s", "conn/s", None)
        # The target is against the floor: empty programs at these hooks already cost this
        # workload more than a target against no program allowed (docs/benchmarks.md). Its 95 %
        # CI should sit above 0.98, and the A/A row within ±0.005.
        self.record_floor("tcp", rates, target=0.985)
        self.record("tcp", "|exported − made| (connects + accepts) − lost", [abs(connects - want) + abs(accepts - want) - lost],
                    "events", "0", lambda v: v <= 0, gate=True)
        self.record("tcp", "events lost", [lost], "events")

    @staticmethod
    def settled(agent: "Agent", done, deadline: float = 10.0) -> dict:
        """Scrapes until `done(metrics)` or the deadline (the pipeline reads events
        asynchronously), then once more after SETTLE_S: the counts an exactness row judges are
        those after any late event, so that a late over-count is seen."""
        end = time.monotonic() + deadline
        while True:
            m = scrape(agent.port)
            if done(m) or time.monotonic() > end:
                time.sleep(SETTLE_S)
                return scrape(agent.port)
            time.sleep(0.2)

    def bench_exactness(self) -> None:
        """A metadata storm from many pod cgroups and a DNS flood: exported counts equal generated
        counts, or the difference equals the loss the agent reports."""
        _, port = self.credserver(840)
        self.dnsmasq()
        agent = Agent(self.binary, self.cg.root, ["--metadata-endpoint", f"127.0.0.1:{port}"])
        clients, requests = (4, 20) if self.quick else (16, 500)
        t0 = time.monotonic()
        for p in self.storm_clients(port, clients, requests, 1000):
            self.wait_ok(p, 300)
        storm_s = time.monotonic() - t0
        generated_fetches = clients * requests
        dclients, dq = (2, 200) if self.quick else (8, 10000)
        t0 = time.monotonic()
        answered = sum(int(p.communicate(timeout=300)[0].strip() or 0) for p in self.dns_flood(dclients, dq))
        dns_s = time.monotonic() - t0
        m = self.settled(agent, lambda m: total(m, "credwatch_credential_fetches_total") >= generated_fetches
                         and self.dns_answered(m) >= answered)
        fetches, dns = total(m, "credwatch_credential_fetches_total"), self.dns_answered(m)
        lost = total(m, "credwatch_events_lost_total")
        agent.stop()
        self.record("exactness", f"metadata storm: {generated_fetches} fetches at {3 * generated_fetches / storm_s:.0f} req/s, exported − generated",
                    [fetches - generated_fetches], "fetches", "0 or −lost", lambda v: v == 0 or -v == lost, gate=True)
        self.record("exactness", f"DNS flood: {answered} answered at {answered / dns_s:.0f} q/s, exported − answered",
                    [dns - answered], "queries", "0 or −lost", lambda v: v == 0 or -v == lost, gate=True)
        self.record("exactness", "events lost", [lost], "events")

    def bench_footprint(self) -> None:
        """Agent RSS and CPU idle and under load; /metrics scrape time and size with 1,000 pods."""
        _, port = self.credserver(840)
        self.dnsmasq()
        agent = Agent(self.binary, self.cg.root, ["--metadata-endpoint", f"127.0.0.1:{port}"])
        window = 2 if self.quick else 10
        c0 = agent.cpu_seconds()
        time.sleep(window)
        idle_cpu = (agent.cpu_seconds() - c0) / window * 100
        self.record("footprint", "CPU idle, % of one core", [idle_cpu], "%")
        self.record("footprint", "RSS idle", [agent.rss_mb()], "MB")
        # about 1k metadata requests/s (3 calls per client request) and 10k DNS queries/s
        c0 = agent.cpu_seconds()
        t0 = time.monotonic()
        storm = self.storm_clients(port, 2, int(170 * window), 170)
        flood = self.dns_flood(4, int(2500 * window))
        rss = []
        while any(p.poll() is None for p in storm + flood):
            rss.append(agent.rss_mb())
            time.sleep(0.5)
        for p in storm:
            self.wait_ok(p, 0)
        elapsed = time.monotonic() - t0
        load_cpu = (agent.cpu_seconds() - c0) / elapsed * 100
        m = scrape(agent.port)
        md_rate = total(m, "credwatch_metadata_requests_total") / elapsed
        dns_rate = total(m, "credwatch_dns_requests_total") / elapsed
        self.record("footprint", f"CPU at {md_rate:.0f} metadata req/s + {dns_rate:.0f} DNS q/s, % of one core",
                    [load_cpu], "%", "≤ 2", lambda v: v <= 2)
        self.record("footprint", "RSS under load (max)", [max(rss or [agent.rss_mb()])], "MB", "≤ 32", lambda v: v <= 32)
        # 1,000 synthetic pods: one process visits each pod cgroup and sends one DNS query from a
        # socket created there (a socket belongs to the cgroup it was created in)
        pods = 50 if self.quick else 1000
        for i in range(pods):
            self.cg.child(f"kubepods/pod{i:08x}-0000-4000-8000-{i:012x}")
        visitor = (
            "import os,socket,struct,sys\n"
            "root=sys.argv[1]\n"
            "for d in sorted(x for x in os.listdir(root) if os.path.isdir(os.path.join(root, x))):\n"
            "    open(os.path.join(root,d,'cgroup.procs'),'w').write(str(os.getpid()))\n"
            "    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n"
            f"    s.sendto(struct.pack('>HHHHHH',1,0x0100,1,0,0,0)+b'\\x05bench\\x04test\\x00'+struct.pack('>HH',1,1),('{DNS_ADDR}',53))\n"
            "    s.recv(512); s.close()\n"
            f"open('{self.cg.root}/cgroup.procs','w').write(str(os.getpid()))\n"
        )
        subprocess.run([sys.executable, "-c", visitor, str(self.cg.root / "kubepods")], check=True, timeout=300)
        time.sleep(1)  # the pipeline attributes the last events
        times, size = [], 0
        for _ in range(10):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/metrics", timeout=10) as r:
                size = len(r.read())
            times.append((time.perf_counter() - t0) * 1000)
        self.record("footprint", f"/metrics scrape time with {pods} pods", times, "ms", "≤ 10", lambda v: v <= 10)
        self.record("footprint", f"/metrics size with {pods} pods", [size / 1024], "KiB")
        self.record("footprint", f"RSS with {pods} pods", [agent.rss_mb()], "MB", "≤ 32", lambda v: v <= 32)
        agent.stop()

    def bench_flag(self) -> None:
        """Time from a storm's first request to the storm gauge reading 1."""
        _, port = self.credserver(840)
        results = []
        for r in range(self.rounds):
            agent = Agent(self.binary, self.cg.root, ["--metadata-endpoint", f"127.0.0.1:{port}"])
            t0 = time.monotonic()
            (client,) = self.storm_clients(port, 1, 0, 1.0)
            flagged = None
            while time.monotonic() - t0 < 60:
                if total(scrape(agent.port), "credwatch_credential_refresh_storm") >= 1:
                    flagged = time.monotonic() - t0
                    break
                time.sleep(0.1)
            client.kill()
            client.wait()
            agent.stop()
            results.append(flagged if flagged is not None else float("inf"))
        self.record("time_to_flag", "storm at 1 request/s, first request → gauge 1", results, "s", "≤ 15", lambda v: v <= 15)

    # -- output --------------------------------------------------------------------------------

    def report(self, names: list[str]) -> str:
        cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
        when = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
        head = [
            BEGIN,
            f"Machine: {os.cpu_count()} × {cpu}, {mem} GiB, Linux {platform.release()}. Each row: "
            f"`cargo xtask bench NAME` ({self.rounds} rounds of {self.seconds} s, modes alternated; "
            f"tcp, dns and e2e request/response: {self.turn_rounds()} rounds of interleaved {TURN_MS}-ms turns, generator "
            f"on CPU {self.cpu}); median of n values, min–max, or the single value where n=1; measured at the UTC "
            f"time in its last column.",
            "",
            TABLE_HEADER,
            "|---|---|---|---|---|---|---|---|",
        ]
        body = [table_row(r, when) for r in self.rows]
        # Rows of benchmarks not run this time stay as they were.
        kept = merged_rows(previous_rows(DOC.read_text() if DOC.exists() else ""), {r["bench"] for r in self.rows})
        return "\n".join([*head, *kept, *body, END])


TABLE_HEADER = "| benchmark | figure | median | min – max (n) | unit | target | | measured |"


def table_row(r: dict, when: str) -> str:
    """A result row of docs/benchmarks.md; a `|` inside a cell is escaped, as Markdown needs."""
    spread = ("single value (n=1)" if r["n"] == 1
              else f"{r['min']:.4g} – {r['max']:.4g} (n={r['n']})")
    cells = [r["bench"], r["figure"], f"{r['median']:.4g}", spread, r["unit"], r["target"], r["verdict"], when]
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def row_cells(line: str) -> list[str]:
    """The cells of a table row, split at unescaped `|` only."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def previous_rows(text: str) -> list[str]:
    """Every result row between the markers of docs/benchmarks.md: not the header or separator.
    A figure may contain `|` (escaped or, in rows written before escaping, not): rows are told
    by where they start, never by how many `|` they hold."""
    if BEGIN not in text or END not in text:
        return []
    block = text[text.index(BEGIN):text.index(END)]
    return [l for l in block.splitlines()
            if l.startswith("| ") and not l.startswith("| benchmark |")]


def merged_rows(previous: list[str], ran: set[str]) -> list[str]:
    """The previous rows of the benchmarks that did not run this time (the first cell names the
    benchmark and never holds a `|`)."""
    return [l for l in previous if row_cells(l)[0] not in ran]


def missed_gates(rows: list[dict]) -> list[dict]:
    """Exactness and loss-accounting rows that missed: these fail the run, quick or not."""
    return [r for r in rows if r["gate"] and r["verdict"] == "MISSED"]


def allow_skips() -> bool:
    return os.environ.get("CREDWATCH_ALLOW_SKIPS") == "1"


def cannot_run(what: str) -> None:
    """Something the benchmarks need is missing: a failure, unless a local run opted out with
    CREDWATCH_ALLOW_SKIPS=1 (`.ci/run` never sets it); then it is said and listed by xtask."""
    if not allow_skips():
        raise SystemExit(f"bench: cannot run {what} (a local run may skip it with CREDWATCH_ALLOW_SKIPS=1)")
    line = f"SKIPPED {what} (CREDWATCH_ALLOW_SKIPS=1)"
    log(line)
    skip_log = os.environ.get("CREDWATCH_SKIP_LOG")
    if skip_log:
        with open(skip_log, "a") as f:
            f.write(f"bench: {line}\n")


def median_ci(values: list[float]) -> tuple[float, float] | None:
    """Distribution-free 95% confidence interval of the median (order statistics n/2 ± 0.98·√n),
    for 20 or more values; None for fewer."""
    n = len(values)
    if n < 20:
        return None
    v = sorted(values)
    half = 0.98 * n ** 0.5
    lo, hi = max(0, int(n / 2 - half) - 1), min(n - 1, int(n / 2 + half + 0.999) - 1)
    return v[lo], v[hi]


def counted_or_lost(want: float, counted):
    """A `settled` condition: `counted(metrics)` reached `want`, or it stopped moving and the
    events the agent reports lost make up the rest (a lost event may or may not cost a count)."""
    last = [None]

    def done(m: dict) -> bool:
        c = counted(m)
        stalled, last[0] = c == last[0], c
        return c >= want or (stalled and c + total(m, "credwatch_events_lost_total") >= want)

    return done


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--loadgen", required=True, help="the credwatch-loadgen binary")
    ap.add_argument("--demo", required=True,
                    help="the credwatch-demo binary (its demo-client is the storm benchmarks' client)")
    ap.add_argument("--compare-binary", default=None,
                    help="another build's credwatch (e.g. main's): fastpath measures it in the same rounds")
    ap.add_argument("--pin-cpu", type=int, default=None,
                    help="CPU for the compiled load generators (default: the last usable one; -1: not pinned)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        cannot_run("the benchmarks: they attach eBPF programs and create cgroups, which needs root")
        return 0
    all_names = ["fastpath", "slowpath", "e2e", "rr", "dns", "tcp", "exactness", "footprint", "flag"]
    # rr is a part of e2e, for running alone.
    names = args.names or [n for n in all_names if n != "rr"]
    unknown = set(names) - set(all_names)
    if unknown:
        raise SystemExit(f"bench: unknown benchmark {sorted(unknown)}; choose from {all_names}")
    b = Bench(args)
    try:
        for n in names:
            log(f"--- {n}")
            getattr(b, f"bench_{n}")()
    finally:
        b.cg.close()
    table = b.report(names)
    print(table)
    if args.quick:
        log("quick mode: docs/benchmarks.md left as it is")
    else:
        text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
        if BEGIN not in text:
            text += "\n" + BEGIN + "\n" + END + "\n"
        a, b_ = text.index(BEGIN), text.index(END) + len(END)
        DOC.write_text(text[:a] + table + text[b_:])
        log(f"wrote {DOC}")
    missed = missed_gates(b.rows)
    for r in missed:
        log(f"FAILED exactness: {r['bench']}: {r['figure']} = {r['median']:.4g} {r['unit']}, target {r['target']}")
    if missed:
        log(f"{len(missed)} exactness or loss-accounting row(s) missed: failing (speed rows do not gate)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
