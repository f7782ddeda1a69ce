#!/bin/bash
# Build renkei's tiny bootable test image from Debian packages already on the
# machine (linux-image-cloud-amd64, busybox-static, cpio, e2fsprogs):
#
#   OUTDIR/kernel      the cloud kernel (bzImage, booted directly by qemu)
#   OUTDIR/initrd      gzip'd newc cpio: busybox, virtio modules and ./init
#   OUTDIR/disk        raw ext2 disk image with a /renkei-marks directory
#   OUTDIR/image.toml  the image manifest: which file has which role, and the
#                      kernel command line (vpe adds the BLAKE3 hashes when it seals)
#
# Usage: build.sh OUTDIR        (env KERNEL=/boot/vmlinuz-... picks a kernel)
# Takes about a second; needs no root mount and no network.
set -euo pipefail

OUT=${1:?usage: build.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
DISK_MIB=${DISK_MIB:-32}

die() { echo "build.sh: $*" >&2; exit 1; }
for tool in busybox cpio gzip mke2fs; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install busybox-static cpio e2fsprogs)"
done
# The initrd has no libc: only Debian's statically linked busybox runs there.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" ||
    die "busybox-static is not installed (apt-get install busybox-static)"
file_busybox=/bin/busybox

if [ -z "${KERNEL:-}" ]; then
    KERNEL=$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1 || true)
fi
[ -n "${KERNEL:-}" ] && [ -r "$KERNEL" ] || die "no kernel (apt-get install linux-image-cloud-amd64)"
KVER=${KERNEL##*/vmlinuz-}
MODDIR=/usr/lib/modules/$KVER
[ -d "$MODDIR" ] || die "no modules for $KVER in $MODDIR"

# Loaded in this order by init; dependencies first (see $MODDIR/modules.dep).
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net"

mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- initrd -----------------------------------------------------------------
ROOT=$WORK/initrd
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,seed,tmp,root,mnt/disk,lib/modules}
cp "$file_busybox" "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
install -m 0755 "$HERE/init" "$ROOT/init"
: >"$ROOT/lib/modules/load-order"
for m in $MODULES; do
    path=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | cut -d: -f1 | head -n 1)
    [ -n "$path" ] || die "module $m not found in $MODDIR/modules.dep"
    case "$path" in
        *.ko) cp "$MODDIR/$path" "$ROOT/lib/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$MODDIR/$path" >"$ROOT/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -dc "$MODDIR/$path" >"$ROOT/lib/modules/$m.ko" ;;
        *) die "unsupported module file $path" ;;
    esac
    echo "$m" >>"$ROOT/lib/modules/load-order"
done
# Fixed timestamps and sorted names keep the archive byte-stable across builds.
find "$ROOT" -exec touch -h -d @0 {} +
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --reproducible -o -H newc --owner=0:0 --quiet) | gzip -n -1 >"$OUT/initrd"

# --- kernel -----------------------------------------------------------------
cp "$KERNEL" "$OUT/kernel"
chmod 0644 "$OUT/kernel" "$OUT/initrd"

# --- disk -------------------------------------------------------------------
DISKROOT=$WORK/disk
mkdir -p "$DISKROOT/renkei-marks"
echo "built from $KVER" >"$DISKROOT/renkei-marks/image-built"
find "$DISKROOT" -exec touch -h -d @0 {} +
rm -f "$OUT/disk"
E2FSPROGS_FAKE_TIME=1 mke2fs -q -F -t ext2 -L renkei-root \
    -U 6c6e6b65-6900-4000-8000-000000000001 -E root_owner=0:0,hash_seed=6c6e6b65-6900-4000-8000-000000000002 \
    -d "$DISKROOT" "$OUT/disk" "${DISK_MIB}M" >/dev/null
chmod 0644 "$OUT/disk"

# --- manifest ---------------------------------------------------------------
cat >"$OUT/image.toml" <<TOML
# renkei VM image manifest (see vpe/README.md, "Image layout").
name = "renkei-test"
cmdline = "console=ttyS0 quiet loglevel=3 panic=-1"

[files]
kernel = "kernel"
initrd = "initrd"
disk = "disk"
TOML
echo "built $OUT (kernel $KVER)"
