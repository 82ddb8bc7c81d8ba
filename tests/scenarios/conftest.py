"""Fixtures for credwatch's scenario tests (see harness.py for the machinery).

Needs root and a cgroup2 mount. A test that cannot run here (no root, no cgroup2, a tool
missing) is skipped with the reason, and any skip fails the run: CI must not pass suites it did
not run. A local run may accept skips with CREDWATCH_ALLOW_SKIPS=1 (`.ci/run` never sets it);
then they are listed at the end, and by `cargo xtask test` after every suite.
"""

import os

import pytest

from harness import Agent, CgroupTree, Processes, cgroup2_mount

# Pinned rather than the agent's defaults, so a change of defaults does not silently change what
# the storm assertions mean: a run of 20 fetches in seconds is a storm, a single fetch is not.
STORM_ARGS = ("--storm-window", "300", "--storm-min-fetches", "5")

ALLOW_SKIPS = os.environ.get("CREDWATCH_ALLOW_SKIPS") == "1"
_skipped: list[str] = []


def _note_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)


def pytest_sessionfinish(session, exitstatus):
    if not _skipped:
        return
    if ALLOW_SKIPS:
        log = os.environ.get("CREDWATCH_SKIP_LOG")
        if log:
            with open(log, "a") as f:
                f.writelines(f"SKIPPED scenario {line} (CREDWATCH_ALLOW_SKIPS=1)\n" for line in _skipped)
    elif session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _skipped and not ALLOW_SKIPS:
        terminalreporter.write_line(
            f"FAILED: {len(_skipped)} skipped (a suite that cannot run fails; a local run may "
            "accept skips with CREDWATCH_ALLOW_SKIPS=1):", red=True)
        for line in _skipped:
            terminalreporter.write_line(f"  {line}", red=True)


@pytest.fixture(scope="session")
def cgroups():
    if os.geteuid() != 0:
        pytest.skip("scenario tests need root (cgroups, eBPF)")
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 mount in /proc/self/mountinfo")
    tree = CgroupTree(mount)
    yield tree
    tree.remove()


@pytest.fixture
def processes():
    started = Processes()
    yield started
    started.end_all()


@pytest.fixture
def pod(cgroups):
    """A kubelet-shaped (systemd driver) container cgroup of its own for each test."""
    return cgroups.systemd_pod()


@pytest.fixture
def servers():
    """Factory: `servers(CredentialServer, host, **options)`; all closed afterwards."""
    started = []

    def start(cls, *args, **kwargs):
        server = cls(*args, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def agent(cgroups, processes, tmp_path):
    """Factory: `agent(server, ...)` starts credwatch watching the test subtree for those
    metadata endpoints and waits for /readyz (unless wait_ready=False: then for /healthz);
    stopped with SIGTERM afterwards."""
    started = []

    def start(*metadata_servers, extra_args=STORM_ARGS, log_level="debug", wait_ready=True):
        workdir = tmp_path / f"agent{len(started)}"
        workdir.mkdir()
        endpoints = [server.endpoint for server in metadata_servers]
        started.append(Agent(processes, workdir, cgroups.root, endpoints, extra_args, log_level,
                             wait_ready=wait_ready))
        return started[-1]

    yield start
    for running in started:
        running.stop()

