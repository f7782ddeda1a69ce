#!/usr/bin/env bash
# The main job on a fresh Debian machine, as root: builds renkei, brings up a
# 3-site federation on loopback (real processes), and shows it working. The
# federation keeps running afterwards for you to explore; the last lines say
# how to use and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

install_packages
ensure_rust
start_services
build_release

BIN="$PWD/target/release"
DEMO="${RENKEI_DEMO_DIR:-/tmp/renkei-demo}"
renkei() { "$BIN/renkei" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ -f "$DEMO/federation.json" ]; then
  renkei local down --dir "$DEMO" >/dev/null 2>&1 || true
  rm -rf "$DEMO"
fi

step "bring up a 3-site federation (CA, meta server, one file server per site)"
renkei local up --dir "$DEMO" --sites 3
export RENKEI_CONFIG="$DEMO/client.toml"

step "renkei hosts: every PoP, its site, liveness, capacity, load"
renkei hosts

step "renkei put: a 64 MiB file written at site1 (to site1's file server)"
head -c $((64 << 20)) /dev/urandom > "$DEMO/sample.bin"
renkei mkdir -p /demo
renkei put "$DEMO/sample.bin" /demo/sample.bin
renkei ls -l /demo
renkei stat /demo/sample.bin

step "renkei get at site3: read from the nearest live replica, verified end to end"
RENKEI_CONFIG="$DEMO/client-site3.toml" renkei get /demo/sample.bin "$DEMO/sample.back"
cmp "$DEMO/sample.bin" "$DEMO/sample.back" && echo "identical: $(sha256sum < "$DEMO/sample.back" | cut -c1-16)..."

step "renkei where: which site holds the bytes"
renkei where /demo/sample.bin

step "renkei mount: the federation mounted at site1 and at site2; a tree copied in at one, read at the other"
MNT1="$DEMO/mnt-site1" MNT2="$DEMO/mnt-site2"
mkdir -p "$MNT1" "$MNT2" "$DEMO/tree/sub"
renkei mount "$MNT1" --log "$DEMO/logs/mount-site1.log"
RENKEI_CONFIG="$DEMO/client-site2.toml" renkei mount "$MNT2" --log "$DEMO/logs/mount-site2.log"
for i in $(seq 1 20); do head -c $((i * 50000)) /dev/urandom > "$DEMO/tree/f$i"; done
echo "hello from site1" > "$DEMO/tree/sub/hello.txt"
cp -r "$DEMO/tree" "$MNT1/tree"
ls -l "$MNT2/tree" | head -5
cat "$MNT2/tree/sub/hello.txt"
diff -r "$DEMO/tree" "$MNT2/tree" && echo "read at site2 through its mount: identical to what site1 copied in"
renkei where /tree/f20
renkei umount "$MNT1"
renkei umount "$MNT2"

step "vpe: register the tiny test VM image into the namespace and boot it at site1"
vpe() { "$BIN/vpe" "$@"; }
bash scripts/vm-image/build.sh "$DEMO/vm-image" >/dev/null
rm -f "$DEMO/id_demo" "$DEMO/id_demo.pub"
ssh-keygen -q -t ed25519 -N '' -C demo@renkei -f "$DEMO/id_demo"
vpe image register demo "$DEMO/vm-image" --tag stable
vpe run --site site1 --image demo:stable --net lab --net data --name demo-vm --ssh-key "$DEMO/id_demo.pub"

step "vpe console: the guest's serial log (its SSH key, an address per segment, the boot marker)"
vpe console demo-vm | grep RENKEI-

step "vpe show: where it runs and its timings (prepare, fetch, boot, the guest's own boot)"
vpe show demo-vm
vpe stop demo-vm

step "monitoring: the status page, service checks, Prometheus metrics, renkei netcheck"
WEB=$(sed -n 's/^web = "\(.*\)"$/\1/p' "$DEMO/meta.toml")
echo "status page: http://$WEB/   (Prometheus metrics: http://$WEB/metrics)"
renkei netcheck --seconds 0.5
curl -s "http://$WEB/metrics" | grep -E '^renkei_(host_up|host_received_bytes_total|check_ok\{host="pop1")'

step "renkei rep: replicate a tree to site2, server to server (the client only orchestrates)"
mkdir -p "$DEMO/reptree/sub"
for i in $(seq 1 40); do head -c $((i * 30000)) /dev/urandom > "$DEMO/reptree/f$i"; done
echo "replicated server to server" > "$DEMO/reptree/sub/note.txt"
renkei put -r "$DEMO/reptree" /demo/rep
renkei rep -D site2 -j 4 /demo/rep
renkei where /demo/rep/f1 /demo/rep/sub/note.txt
renkei fsck /demo/rep

step "small files across an emulated WAN (10 ms RTT, 1 Gbit/s): the mount bundling them vs one request per file"
# Three network namespaces behind the project's WAN emulator: meta server at
# site a, file servers at b and c. The Montage-like set at factor 0.01 (68
# files, 0.16 GB) is sent as one tar stream, then cp -r'd into a mount at b
# with bundling on and with -o nobundle, then read back at c. About 30 s.
"$BIN/renkei-bench" wanfs --scale 0.01 --ls-entries 0 --big-mib 0 --no-sshfs --no-limit \
  --scratch "$DEMO/wanfs" 2>"$DEMO/logs/wanfs.log" | sed -n '/^## The set/,/^The set copied out/p'

step "done"
cat <<MSG
The federation is still running in $DEMO. Its status page: http://$WEB/
Try:
  export RENKEI_CONFIG=$DEMO/client.toml        # a client at site1 (client-site2.toml, ... for others)
  $BIN/renkei --help
  $BIN/vpe --help                                # VMs: vpe image ls, vpe run --site site1 --image demo ...
Stop it with:
  $BIN/renkei local down --dir $DEMO
MSG
