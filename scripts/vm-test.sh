#!/usr/bin/env bash
# Runs integration test binaries inside a cgroup v2-only machine.
#
# The hosts we develop on are hybrid (v1 controllers plus a cgroup2 mount),
# while most production hosts are cgroup2 only. This boots Debian's kernel
# (linux-image-amd64) under qemu's software emulation (-accel tcg: nested KVM
# hangs on these machines) with `cgroup_no_v1=all` and an initramfs holding
# busybox, hako-runtime and the chosen test binaries, runs the tests there
# against the live cgroup2 hierarchy, and exits with their status.
#
# Usage: scripts/vm-test.sh [TEST-TARGET...]   (default: cgroups)
#   TEST-TARGET names a file of crates/tests/tests (cgroups, lifecycle, ...).
# Environment: HAKO_VM_KERNEL (default: newest /boot/vmlinuz-*),
#   HAKO_VM_TIMEOUT seconds (default 1800), HAKO_VM_MEM (default 2048 MiB),
#   HAKO_VM_TEST_ARGS extra arguments for the test binaries (a filter, say).
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cgroups)

kernel=${HAKO_VM_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$kernel" ] || [ ! -r "$kernel" ]; then
  echo "vm-test: no kernel in /boot (install linux-image-amd64)" >&2
  exit 1
fi
for tool in qemu-system-x86_64 cpio busybox; do
  command -v "$tool" >/dev/null || { echo "vm-test: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

# Build the runtime and the test binaries; cargo names the binaries.
cargo build -q -p hako-runtime-cli
runtime=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/debug/hako-runtime
test_args=()
for t in "${targets[@]}"; do test_args+=(--test "$t"); done
mapfile -t exes < <(cargo test -q -p hako-tests "${test_args[@]}" --no-run --message-format=json |
  grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/')
[ ${#exes[@]} -eq ${#targets[@]} ] || { echo "vm-test: expected ${#targets[@]} test binaries, got: ${exes[*]}" >&2; exit 1; }

work=$(mktemp -d /tmp/hako-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,proc,sys,dev,tmp,run,etc,newroot,hako/deps}
cp "$(command -v busybox)" "$root/bin/busybox"
for applet in $(busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
ln -s bin "$root/sbin"
mkdir -p "$root/usr"; ln -s ../bin "$root/usr/bin"; ln -s ../bin "$root/usr/sbin"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

# Binaries, with whatever shared libraries they need (hako's are static).
copy_with_libs() {
  local exe=$1 dest=$2
  cp "$exe" "$dest"
  ldd "$exe" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done || true
}
copy_with_libs "$runtime" "$root/hako/hako-runtime"
# dash as /bin/sh, as on the host (busybox's sh picks its applet by argv[0],
# which the hook tests set to something else).
copy_with_libs /bin/dash "$root/bin/dash"
ln -sf dash "$root/bin/sh"
# Modules the tests may use: a dummy link so the VM has more than loopback,
# veth, overlayfs.
kver=$(basename "$kernel" | sed 's/^vmlinuz-//')
mkdir -p "$root/modules"
for m in drivers/net/dummy drivers/net/veth fs/overlayfs/overlay drivers/block/brd; do
  f=/lib/modules/$kver/kernel/$m.ko
  [ -e "$f" ] && cp "$f" "$root/modules/"
done
# HAKO_VM_SYSTEMD=1: Debian's systemd runs as PID 1 and starts the tests as
# a service (for the systemd cgroup driver).
if [ -n "${HAKO_VM_SYSTEMD:-}" ]; then
  mkdir -p "$root/lib/systemd"
  copy_with_libs /lib/systemd/systemd "$root/lib/systemd/systemd"
  mkdir -p "$root/lib/systemd/system" "$root/etc/systemd/system"
  cp /lib/systemd/system/*.slice "$root/lib/systemd/system/" 2>/dev/null || true
  cp /etc/os-release "$root/etc/os-release"
  : >"$root/etc/machine-id"
  cat >"$root/etc/systemd/system/hako-tests.service" <<'UNIT'
[Unit]
DefaultDependencies=no
[Service]
Type=oneshot
ExecStart=/bin/sh -c '. /hako/run-tests; echo "HAKO-VM-EXIT=$rc"; poweroff -f'
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
Environment=HAKO_RUNTIME=/hako/hako-runtime PATH=/bin
UNIT
fi
names=()
for exe in "${exes[@]}"; do
  name=$(basename "$exe")
  copy_with_libs "$exe" "$root/hako/deps/$name"
  names+=("$name")
done

# Stage 1 copies the initramfs into a tmpfs and switches to it: pivot_root
# (what containers use) cannot work while / is the initramfs itself.
cat >"$root/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
if [ ! -e /stage2 ]; then
  mount -t tmpfs -o mode=755 root /newroot
  for d in bin sbin usr etc hako init lib lib64 run modules; do [ -e /$d ] && cp -a /$d /newroot/; done
  mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/tmp
  touch /newroot/stage2
  umount /proc
  exec switch_root /newroot /init
fi
if [ -x /lib/systemd/systemd ]; then
  umount /proc
  exec /lib/systemd/systemd --unit=hako-tests.service --log-target=console --log-level=notice
fi
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || echo "vm: cannot enable $c"
done
for m in /modules/*.ko; do [ -e "$m" ] && insmod "$m" $( [ "${m##*/}" = brd.ko ] && echo rd_nr=1 rd_size=8192); done
ip link set lo up 2>/dev/null
ip link add dummy0 type dummy 2>/dev/null && ip link set dummy0 up
echo "vm: kernel $(uname -r); cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
grep -c cgroup /proc/self/mountinfo | sed 's/^/vm: cgroup mounts: /'
echo "vm: block devices: $(ls /sys/block | tr '\n' ' ')"
export HAKO_RUNTIME=/hako/hako-runtime RUST_BACKTRACE=1
. /hako/run-tests
echo "HAKO-VM-EXIT=$rc"
poweroff -f
EOF
chmod 755 "$root/init"
{
  echo 'rc=0'
  for n in "${names[@]}"; do
    echo "echo \"vm: running $n\""
    echo "/hako/deps/$n --test-threads=2 ${HAKO_VM_TEST_ARGS:-} || rc=1"
  done
} >"$root/hako/run-tests"

(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 >"$work/initrd.gz"
echo "vm-test: booting $kernel with ${names[*]} ($(du -h "$work/initrd.gz" | cut -f1) initramfs)"

log=$work/console.log
set +e
timeout "${HAKO_VM_TIMEOUT:-1800}" qemu-system-x86_64 \
  -accel tcg -cpu max -smp 2 -m "${HAKO_VM_MEM:-2048}" \
  -kernel "$kernel" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 cgroup_no_v1=all panic=-1 quiet loglevel=3" \
  -no-reboot -monitor none -serial stdio -display none \
  </dev/null | tee "$log"
qemu_rc=${PIPESTATUS[0]}
set -e
result=$(grep -ao 'HAKO-VM-EXIT=[0-9]*' "$log" | tail -n 1 | cut -d= -f2)
if [ -z "$result" ]; then
  echo "vm-test: the VM stopped without a result (qemu/timeout status $qemu_rc)" >&2
  exit 1
fi
echo "vm-test: tests in the cgroup2-only VM exited with $result"
exit "$result"
