#!/usr/bin/env bash
# Boots one of Debian's packaged kernels under qemu-system-x86_64 with a tiny initramfs that
# loads and attaches credwatch's programs and checks them with real traffic inside the VM:
#   1. `credwatch demo` (its own cgroups, a KIAM-like credential server, Java-v1-like clients,
#      DNS with a search list): a refresh storm must be flagged for the KIAM pod only, and API
#      connects and DNS queries counted;
#   2. `credwatch run` on the root cgroup: attaches all five programs, drops capabilities (keeping
#      CAP_BPF only if this kernel wants it for reading its counters) and serves /metrics; where
#      an optional kernel feature is missing it says so (credwatch_kernel_feature).
# Prints the VM's console and ends with `vm-kernel-test: PASS <kernel>` or exits non-zero.
#
#   sudo scripts/vm-kernel-test.sh [KERNEL_PACKAGE]
#
# KERNEL_PACKAGE defaults to the kernel linux-image-amd64 depends on (Debian 12: 6.1). Any
# linux-image-*-amd64 package in this machine's apt sources works. Uses KVM when /dev/kvm is
# usable, else software emulation (several times slower). The VM has no network device: all its
# traffic stays on its own loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=target/vm
BIN=${CREDWATCH_BIN:-target/debug/credwatch}
TIMEOUT=${VM_TIMEOUT:-600}
log() { printf 'vm-kernel-test: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then log "needs root (apt, and the VM's /dev/kvm)"; exit 1; fi
if ! command -v qemu-system-x86_64 >/dev/null; then
  log "apt: installing qemu-system-x86"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi
[ -x "$BIN" ] || cargo build -p agent

pkg=${1:-$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')}
[ -n "$pkg" ] || { log "no kernel package found (run apt-get update)"; exit 1; }
mkdir -p "$WORK/debs"
# apt-get download: the packages as Debian ships them, unpacked here, nothing installed.
for p in "$pkg" busybox-static; do
  ls "$WORK/debs/${p}_"*.deb >/dev/null 2>&1 || (cd "$WORK/debs" && apt-get download -qq "$p" 2>/dev/null)
done
rm -rf "$WORK/kernel" "$WORK/busybox" "$WORK/initramfs"
dpkg-deb -x "$(ls "$WORK/debs/${pkg}_"*.deb | head -1)" "$WORK/kernel"
dpkg-deb -x "$(ls "$WORK/debs/busybox-static_"*.deb | head -1)" "$WORK/busybox"
vmlinuz=$(ls "$WORK"/kernel/boot/vmlinuz-* | head -1)
log "kernel $(basename "$vmlinuz") from $pkg"

# The initramfs: busybox, credwatch and the shared libraries it links, and /init.
root="$WORK/initramfs"
mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,run}
cp "$WORK/busybox/bin/busybox" "$root/bin/busybox"
cp "$BIN" "$root/bin/credwatch"
# The BPF_PROG_TEST_RUN suite too (agent/tests/prog_test_run), when built: the kernel parsers on
# crafted packets, and the full verifier log if a program is rejected.
tests=$(ls -t target/debug/deps/prog_test_run-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
[ -n "$tests" ] && cp "$tests" "$root/bin/prog_test_run"
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
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

# 0. The kernel parsers on crafted packets (BPF_PROG_TEST_RUN), if the suite was built.
if [ -x /bin/prog_test_run ]; then
  prog_test_run --test-threads=1 > /tmp/tests.log 2>&1 || fail "prog_test_run"
  grep -E '^test |test result' /tmp/tests.log
  grep -q 'test result: ok' /tmp/tests.log || tail -c 6000 /tmp/tests.log
  prog_test_run verifier_budget --nocapture 2>&1 | grep 'verifier processed'
fi

# 1. The demo: programs attached to its sandbox, real clients, a refresh storm.
credwatch demo --duration 25 --listen 127.0.0.1:9500 > /tmp/demo.log 2>&1
echo "vm-check: demo exited $?"
sed -n '/credwatch demo: metrics/,$p' /tmp/demo.log | tail -4
last=$(grep '  pod ' /tmp/demo.log | tail -2)
echo "$last" | head -1 | grep -q 'REFRESH STORM' || fail "no storm flagged for the KIAM pod"
echo "$last" | tail -1 | grep -q 'healthy' || fail "the healthy pod was flagged"
echo "$last" | grep -q 'API calls    0' && fail "API connects not counted"
echo "$last" | grep -q 'DNS queries    0' && fail "DNS queries not counted"
grep -q 'attached cw_skb_egress, cw_skb_ingress, cw_connect4, cw_connect6, cw_sock_ops' /tmp/demo.log \
  || { fail "not every program attached"; sed -n '/ERROR/,$p' /tmp/demo.log | grep -B30 -m1 'verification time'; }

# 2. The agent as deployed: attach to the root cgroup, drop capabilities, serve /metrics.
credwatch run --listen 127.0.0.1:9600 --no-default-endpoints --metadata-endpoint 127.0.0.1:9 \
  > /tmp/run.log 2>&1 &
pid=$!
for i in $(seq 60); do wget -q -O /tmp/ready http://127.0.0.1:9600/readyz 2>/dev/null && break; sleep 1; done
grep -E 'capabilities|refused|ERROR' /tmp/run.log | cut -c1-300
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
# right after the boot loader (seen here). VM_ACCEL=kvm to try it.
accel=(-accel "${VM_ACCEL:-tcg}" -cpu max)
log "booting (${accel[*]}, timeout ${TIMEOUT}s)"
console="$WORK/console.log"
timeout "$TIMEOUT" qemu-system-x86_64 "${accel[@]}" -m 1536 -smp 2 \
  -nographic -no-reboot -nic none \
  -kernel "$vmlinuz" -initrd "$WORK/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" | tee "$console" || true
if grep -q '^vm-check: PASS' "$console"; then
  log "PASS $(grep -o 'vm-check: PASS.*' "$console" | cut -d' ' -f3)"
else
  log "FAIL (console in $console)"
  exit 1
fi
