#!/bin/bash
# Make sure virtlogd and libvirtd are running and answering on qemu:///system.
# Idempotent; every wait is bounded. Used by vpe's end-to-end tests and CI:
#
#   apt-get install -y libvirt-daemon-system libvirt-dev pkg-config qemu-system-x86 \
#       qemu-utils busybox-static cpio e2fsprogs linux-image-cloud-amd64
#   bash scripts/vm-image/libvirt-up.sh
#   VPE_TEST_LIBVIRT=1 cargo test -p vpe
#
# On a host booted with systemd, systemctl starts the units. In containers
# and sandboxes without systemd (PID 1 is not systemd, `systemctl` fails with
# "System has not been booted with systemd"), the daemons are started
# directly in daemon mode: `virtlogd -d` then `libvirtd -d`.
set -euo pipefail

ready() { timeout 5 virsh -c qemu:///system version >/dev/null 2>&1; }

if ready; then
    echo "libvirt: already running"
    exit 0
fi

if [ -d /run/systemd/system ] && systemctl start virtlogd.socket libvirtd.socket libvirtd.service 2>/dev/null; then
    how=systemctl
else
    how="virtlogd -d; libvirtd -d"
    # A second instance exits at once on the daemon's pid-file lock, so
    # starting unconditionally is safe (pgrep would also match zombies).
    virtlogd -d || true
    libvirtd -d || true
fi

for _ in $(seq 1 50); do
    if ready; then
        echo "libvirt: started ($how)"
        exit 0
    fi
    sleep 0.2
done
echo "libvirt: libvirtd did not answer on qemu:///system within 10 s (started with: $how)" >&2
exit 1
