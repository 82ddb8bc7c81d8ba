#!/usr/bin/env bash
# Boots a packaged distribution kernel under qemu-system-x86_64 with a tiny initramfs that
# loads and attaches credwatch's programs and checks them with real traffic inside the VM:
#   0. the BPF_PROG_TEST_RUN suite (when built), and the verifier's instruction counts;
#   1. `credwatch-demo` (its own cgroups, a KIAM-like credential server, Java-v1-like clients,
#      DNS with a search list): a refresh storm must be flagged for the KIAM pod only, and API
#      connects and DNS queries counted;
#   2. `credwatch run` on the root cgroup: attaches all five programs, drops capabilities (keeping
#      CAP_BPF only if this kernel wants it for reading its counters) and serves /metrics; where
#      an optional kernel feature is missing it says so (credwatch_kernel_feature).
# Prints the VM's console and ends with `vm-kernel-test: PASS <kernel>` or exits non-zero.
#
#   sudo scripts/vm-kernel-test.sh [KERNEL]
#
# KERNEL is one of
#   (nothing)             the kernel linux-image-amd64 depends on in this machine's apt sources
#   linux-image-...       any kernel package in this machine's apt sources
#   debian11 | debian12 | debian13
#                         Debian 11 (bullseye, 5.10: Amazon Linux 2's line), 12 (bookworm, 6.1),
#                         13 (trixie, 6.12): the kernel that suite's linux-image-amd64 depends on
#   SUITE:PACKAGE         a kernel package from another Debian suite, e.g.
#                         bullseye:linux-image-5.10.0-32-cloud-amd64
#   ubuntu22.04 | ubuntu24.04
#                         Ubuntu's generic kernel as released with 22.04 (5.15) and 24.04 (6.8)
# Other Debian suites are read with a private apt configuration under target/vm/apt/SUITE (its
# own sources list, lists and cache; the host's apt configuration and state are not touched) from
# the mirror this machine's apt sources already use, with apt's signature checks. The Ubuntu
# kernels are single files fetched from VM_UBUNTU_MIRROR and checked against the SHA256 pinned
# below. Downloads are kept in target/vm/debs and not fetched again.
#
# Software emulation by default (see below). The VM has no network device: all its traffic stays
# on its own loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$PWD/target/vm
BIN=${CREDWATCH_BIN:-target/debug/credwatch}
DEMO_BIN=${CREDWATCH_DEMO_BIN:-$(dirname "$BIN")/credwatch-demo}
TIMEOUT=${VM_TIMEOUT:-600}
DEBS=$WORK/debs
log() { printf 'vm-kernel-test: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then log "needs root (apt, and the VM's /dev/kvm)"; exit 1; fi
for b in "$BIN" "$DEMO_BIN"; do
  [ -x "$b" ] || { log "$b is not built (cargo build -p agent -p credwatch-demo)"; exit 1; }
done
if ! command -v qemu-system-x86_64 >/dev/null; then
  log "apt: installing qemu-system-x86"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi
[ -x "$BIN" ] || cargo build -p agent
mkdir -p "$DEBS"

# apt for another Debian suite, with everything it reads and writes under target/vm/apt/SUITE.
# The mirror is the one this machine's sources use for its own release (and -security).
suite_apt() {
  local suite=$1 cmd=$2; shift 2
  local d=$WORK/apt/$suite
  if [ ! -s "$d/sources.list" ]; then
    local host mirror security
    host=$(. /etc/os-release && echo "$VERSION_CODENAME")
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk -v r="$host" '$2 == r {print $1; exit}')
    security=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk -v r="$host-security" '$2 == r {print $1; exit}')
    [ -n "$mirror" ] || { log "no Debian mirror for $host in this machine's apt sources"; exit 1; }
    mkdir -p "$d/state/lists/partial" "$d/cache/archives/partial" "$d/parts"
    : > "$d/state/status"
    local key=/usr/share/keyrings/debian-archive-keyring.gpg
    {
      echo "deb [signed-by=$key] $mirror $suite main"
      [ -n "$security" ] && echo "deb [signed-by=$key] $security $suite-security main"
    } > "$d/sources.list.new"
    mv "$d/sources.list.new" "$d/sources.list"
  fi
  "$cmd" -q -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts="$d/parts" \
    -o Dir::Etc::Preferences="$d/parts/none" -o Dir::Etc::PreferencesParts="$d/parts" \
    -o Dir::State="$d/state" -o Dir::State::status="$d/state/status" -o Dir::Cache="$d/cache" \
    -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Architecture=amd64 \
    -o APT::Architectures::=amd64 -o Acquire::Languages=none "$@"
}
# Its package lists, refreshed when missing or older than a day.
suite_update() {
  local lists=$WORK/apt/$1/state/lists
  if [ -z "$(find "$lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null)" ]; then
    log "apt: package lists of $1 (private configuration in $WORK/apt/$1)"
    suite_apt "$1" apt-get update >/dev/null
  fi
}
# Downloads PACKAGE (from SUITE, or this machine's sources when SUITE is empty) into $DEBS unless
# a version of it is already there; prints the .deb's path.
fetch_deb() {
  local suite=$1 p=$2
  if ! ls "$DEBS/${p}_"*.deb >/dev/null 2>&1; then
    if [ -n "$suite" ]; then
      suite_update "$suite"
      (cd "$DEBS" && suite_apt "$suite" apt-get download -qq "$p" 2>/dev/null) \
        || { log "$p not found in $suite"; exit 1; }
    else
      (cd "$DEBS" && apt-get download -qq "$p" 2>/dev/null) || { log "$p not found"; exit 1; }
    fi
  fi
  ls "$DEBS/${p}_"*.deb | head -1
}
# The kernel linux-image-amd64 depends on in SUITE (or in this machine's sources).
default_kernel() {
  if [ -n "$1" ]; then suite_update "$1"; suite_apt "$1" apt-cache depends linux-image-amd64
  else apt-cache depends linux-image-amd64; fi | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
# Ubuntu: one pinned file each. The generic kernels keep nothing this test needs in modules
# (serial console, initramfs, cgroup2, BPF, IPv4/IPv6 loopback are all built in).
UBUNTU_MIRROR=${VM_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
fetch_pinned() {
  local path=$1 sha=$2 file
  file=$DEBS/$(basename "$path")
  if [ ! -s "$file" ]; then
    log "fetching $(basename "$path")"
    curl -fsS --retry 3 -o "$file.part" "$UBUNTU_MIRROR/$path"
    mv "$file.part" "$file"
  fi
  echo "$sha  $file" | sha256sum -c --quiet - >&2 || { rm -f "$file"; log "SHA256 mismatch: $file"; exit 1; }
  echo "$file"
}

spec=${1:-}
case "$spec" in
  debian11) suite=bullseye; pkg=$(default_kernel bullseye) ;;
  debian12) suite=bookworm; pkg=$(default_kernel bookworm) ;;
  debian13) suite=trixie; pkg=$(default_kernel trixie) ;;
  *:*) suite=${spec%%:*}; pkg=${spec#*:} ;;
  ubuntu*) suite=; pkg= ;;
  '') suite=; pkg=$(default_kernel "") ;;
  *) suite=; pkg=$spec ;;
esac
case "$spec" in
  ubuntu22.04) deb=$(fetch_pinned pool/main/l/linux-signed/linux-image-5.15.0-25-generic_5.15.0-25.25_amd64.deb \
    "ad56f8c442a54d4f5ff2dff010d00321d53e32b543f3a92f3ba4e042d20a71da") ;;
  ubuntu24.04) deb=$(fetch_pinned pool/main/l/linux-signed/linux-image-6.8.0-31-generic_6.8.0-31.31_amd64.deb \
    "fd2ed023c84163e62c73d3b7b613a9b004bd31e335641c23d42bd249e489fbe6") ;;
  ubuntu*) log "unknown Ubuntu release $spec (ubuntu22.04, ubuntu24.04)"; exit 1 ;;
  *)
    [ -n "$pkg" ] || { log "no kernel package found (run apt-get update)"; exit 1; }
    deb=$(fetch_deb "$suite" "$pkg") ;;
esac
busybox=$(fetch_deb "" busybox-static)
rm -rf "$WORK/kernel" "$WORK/busybox" "$WORK/initramfs"
dpkg-deb -x "$deb" "$WORK/kernel"
dpkg-deb -x "$busybox" "$WORK/busybox"
vmlinuz=$(ls "$WORK"/kernel/boot/vmlinuz-* | head -1)
log "kernel $(basename "$vmlinuz") from $(basename "$deb")"

# The initramfs: busybox, credwatch, credwatch-demo and the shared libraries they link, and /init.
root="$WORK/initramfs"
mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,run}
cp "$WORK/busybox/bin/busybox" "$root/bin/busybox"
cp "$BIN" "$root/bin/credwatch"
cp "$DEMO_BIN" "$root/bin/credwatch-demo"
# The BPF_PROG_TEST_RUN suite too (agent/tests/prog_test_run), when built: the kernel parsers on
# crafted packets, and the full verifier log if a program is rejected.
tests=$(ls -t target/debug/deps/prog_test_run-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
[ -n "$tests" ] && cp "$tests" "$root/bin/prog_test_run"
for lib in $( { ldd "$BIN"; ldd "$DEMO_BIN"; } | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
: > "$root/etc/resolv.conf"   # the demo bind-mounts its clients' resolv.conf over this
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"
cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
result=PASS
fail() { echo "vm-check: FAIL $*"; result=FAIL; }
echo "vm-check: kernel $(uname -r)"

# VM_LOAD_ONLY=1: only load the programs and print the verifier's counts (a quick loop when
# working on what a verifier refuses or how much it walks).
if grep -q 'credwatch.load_only=1' /proc/cmdline; then
  prog_test_run verifier_budget --nocapture > /tmp/budget.log 2>&1 || fail "verifier_budget"
  grep -E 'verifier processed|panicked|rejected|instructions verified' /tmp/budget.log | cut -c1-300
  grep -q 'verifier rejected' /tmp/budget.log && tail -c 4000 /tmp/budget.log
  echo "vm-check: $result $(uname -r)"
  poweroff -f
fi

# 0. The kernel parsers on crafted packets (BPF_PROG_TEST_RUN), if the suite was built.
if [ -x /bin/prog_test_run ]; then
  prog_test_run --test-threads=1 > /tmp/tests.log 2>&1 || fail "prog_test_run"
  grep -E '^test |test result|^SKIPPED' /tmp/tests.log | sort -u
  grep -q 'test result: ok' /tmp/tests.log || tail -c 6000 /tmp/tests.log
  prog_test_run verifier_budget --nocapture 2>&1 | grep 'verifier processed'
fi

# 1. The demo: programs attached to its sandbox, real clients, a refresh storm.
credwatch-demo --duration 25 --listen 127.0.0.1:9500 > /tmp/demo.log 2>&1
echo "vm-check: demo exited $?"
sed -n '/credwatch demo: metrics/,$p' /tmp/demo.log | tail -4
last=$(grep '  pod ' /tmp/demo.log | tail -2)
echo "$last" | head -1 | grep -q 'REFRESH STORM' || fail "no storm flagged for the KIAM pod"
echo "$last" | tail -1 | grep -q 'healthy' || fail "the healthy pod was flagged"
echo "$last" | grep -q 'API calls    0' && fail "API connects not counted"
echo "$last" | grep -q 'DNS queries    0' && fail "DNS queries not counted"
# connect4 and connect6 only where sock_ops may not read the cgroup (it records connects where it
# may; agent-ebpf/src/tcp.rs), which the agent says when it loads without listener attribution.
programs='cw_skb_egress, cw_skb_ingress, cw_sock_ops'
grep -q 'loaded without listener attribution' /tmp/demo.log \
  && programs='cw_skb_egress, cw_skb_ingress, cw_connect4, cw_connect6, cw_sock_ops'
grep -q "attached $programs to " /tmp/demo.log \
  || { fail "not every program attached"; sed -n '/ERROR/,$p' /tmp/demo.log | grep -B30 -m1 'verification time'; }

# 2. The agent as deployed: attach to the root cgroup, drop capabilities, serve /metrics.
credwatch run --listen 127.0.0.1:9600 --no-default-endpoints --metadata-endpoint 127.0.0.1:9 \
  --log-level debug > /tmp/run.log 2>&1 &
pid=$!
for i in $(seq 60); do wget -q -O /tmp/ready http://127.0.0.1:9600/readyz 2>/dev/null && break; sleep 1; done
grep -E 'capabilities|refused|ERROR' /tmp/run.log | cut -c1-300
# Why a program was refused before its fallback loaded (the verifier's complaint).
grep -oE '(unknown func|invalid|back-edge|too large|R[0-9]+ )[^\\]{0,80}' /tmp/run.log | sort -u | head -5
grep CapEff /proc/$pid/status
wget -q -O /tmp/metrics http://127.0.0.1:9600/metrics || fail "no /metrics"
grep -E '^credwatch_(kernel_feature|program_attached)' /tmp/metrics
grep -q 'credwatch_program_attached{program="cw_sock_ops"} 1' /tmp/metrics || fail "programs not attached"
grep -q 'credwatch_events_lost_total{reason="ringbuf_full"} 0' /tmp/metrics || fail "kernel counters unreadable"
grep -q 'reading kernel counter' /tmp/run.log && fail "counter reads failed after the capability drop"
kill -TERM $pid; wait $pid || fail "credwatch run exited $?"
echo "vm-check: $result $(uname -r)"
poweroff -f
EOF
chmod +x "$root/init"

# newc cpio, gzip: what the kernel unpacks into its initial root.
python3 - "$root" "$WORK/initramfs.cpio.gz" <<'EOF'
import gzip, os, stat, sys
root, out = sys.argv[1], sys.argv[2]
def entry(f, name, st, data=b""):
    fields = [0, st.st_mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    f.write(b"070701" + b"".join(b"%08x" % v for v in fields) + name.encode() + b"\0")
    f.write(b"\0" * (-(110 + len(name) + 1) % 4) + data + b"\0" * (-len(data) % 4))
with gzip.open(out, "wb", compresslevel=1) as f:
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                entry(f, rel, st, os.readlink(path).encode())
            elif stat.S_ISREG(st.st_mode):
                entry(f, rel, st, open(path, "rb").read())
            else:
                entry(f, rel, st)
    entry(f, "TRAILER!!!", os.stat_result((0,) * 10))
EOF

# Software emulation by default: on a machine that is itself a VM, nested KVM may hang the guest
# right after the boot loader (seen here). VM_ACCEL=kvm to try it. The CPU model is `max`, except
# for Debian 13's 6.12, which oopses early in boot under it (int3 in
# sched_clock_idle_wakeup_event) and boots as qemu64. Not qemu64 for all: without RDRAND, 5.10
# and 5.15 take minutes to seed their random generator, and `credwatch-demo` waits for it on
# 5.15 past the timeout. VM_CPU to choose another.
cpu=max
[ "$spec" = debian13 ] && cpu=qemu64
accel=(-accel "${VM_ACCEL:-tcg}" -cpu "${VM_CPU:-$cpu}")
log "booting (${accel[*]}, timeout ${TIMEOUT}s)"
console="$WORK/console.log"
timeout "$TIMEOUT" qemu-system-x86_64 "${accel[@]}" -m 1536 -smp 2 \
  -nographic -no-reboot -nic none \
  -kernel "$vmlinuz" -initrd "$WORK/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3 credwatch.load_only=${VM_LOAD_ONLY:-0}" \
  | tee "$console" || true
if grep -q '^vm-check: PASS' "$console"; then
  log "PASS $(grep -o 'vm-check: PASS.*' "$console" | cut -d' ' -f3)"
else
  log "FAIL (console in $console)"
  exit 1
fi
