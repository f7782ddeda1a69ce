# Shared set-up for scripts/demo.sh and scripts/test.sh on a Debian machine
# (run as root). Installs only what is missing, finds the Rust toolchain, and
# starts the services the demo and tests need.

# Debian packages renkei's demo and tests use.
RENKEI_PACKAGES=(
  fuse3 libfuse3-dev pkg-config            # the FUSE mount
  libvirt-daemon-system libvirt-clients libvirt-dev   # VM hosting (vpe)
  qemu-system-x86 qemu-utils               # guests and their disks
  linux-image-cloud-amd64 busybox-static cpio e2fsprogs   # the tiny test VM image
  iproute2 iputils-ping iperf3             # WAN emulator and its checks
  sshfs openssh-server openssh-client      # baselines in benchmarks
  gfmd gfsd gfarm-client gfarm2fs postgresql gcc   # Gfarm itself in `renkei-bench paper` (gcc: its getifaddrs shim)
  rsync git sqlite3 tar                    # real tools on the mount
  ca-certificates curl
  chromium chromium-driver                 # the status page in a real browser (monitoring tests)
  systemd                                  # systemd-analyze verifies the package's units
  etcd-server                              # the etcd metadata store (tests start their own cluster)
  protobuf-compiler                        # protoc, which the etcd client crate's build needs
)

# Every tool the demo and the tests run, with the package that provides it.
# After installing, each must be found and must run (`install_packages` checks).
RENKEI_TOOLS=(
  fusermount3:fuse3 pkg-config:pkg-config
  virsh:libvirt-clients libvirtd:libvirt-daemon virtlogd:libvirt-daemon
  qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils
  busybox:busybox-static cpio:cpio mke2fs:e2fsprogs
  ip:iproute2 ping:iputils-ping iperf3:iperf3
  sshfs:sshfs sshd:openssh-server ssh:openssh-client ssh-keygen:openssh-client
  gfmd:gfmd config-gfarm:gfmd gfsd:gfsd config-gfsd:gfsd gfarm2fs:gfarm2fs cc:gcc setpriv:util-linux
  gfkey:gfarm-client gfhost:gfarm-client gfmkdir:gfarm-client gfpcopy:gfarm-client
  gfrep:gfarm-client gfwhere:gfarm-client gfrm:gfarm-client
  rsync:rsync git:git sqlite3:sqlite3 tar:tar curl:curl
  chromium:chromium chromedriver:chromium-driver
  systemd-analyze:systemd
  etcd:etcd-server protoc:protobuf-compiler
)

# Packages whose versions must move together. The machine image may ship
# qemu-utils 10 from backports while qemu-system-x86 comes from bookworm (7.2);
# qemu-utils 10 Breaks qemu-system-common < 8, so apt would *remove* qemu-utils
# to install qemu-system-x86. Members are pinned to the anchor's version.
# Format: ANCHOR:MEMBER[,MEMBER...]
RENKEI_VERSION_GROUPS=(qemu-system-x86:qemu-utils)

log() { printf '\n== [%s, %ss] %s\n' "$(date -u +%H:%M:%S)" "$SECONDS" "$*" >&2; }

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
pkg_candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }

# "MEMBER=VERSION" for each group member whose installed version differs from
# the version its anchor has (or will have) and which apt can install.
version_pins() {
  local g anchor members m want
  for g in "${RENKEI_VERSION_GROUPS[@]}"; do
    anchor=${g%%:*} members=${g#*:}
    if pkg_installed "$anchor"; then want=$(pkg_version "$anchor"); else want=$(pkg_candidate "$anchor"); fi
    [ -n "$want" ] && [ "$want" != "(none)" ] || continue
    for m in ${members//,/ }; do
      [ "$(pkg_version "$m")" = "$want" ] && pkg_installed "$m" && continue
      apt-cache madison "$m" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$want" &&
        echo "$m=$want"
    done
  done
}

# Which tools are missing or do not run; prints "tool (package)" per line.
missing_tools() {
  local t tool pkg path
  for t in "${RENKEI_TOOLS[@]}"; do
    tool=${t%%:*} pkg=${t#*:}
    path=$(PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" 2>/dev/null || true)
    if [ -z "$path" ]; then echo "$tool (package $pkg): not found"; continue; fi
    case "$tool" in
      # These link many libraries: run them, so a half-removed package shows.
      qemu-img | qemu-system-x86_64 | virsh | sshfs | iperf3 | etcd | protoc)
        "$path" --version >/dev/null 2>&1 || echo "$tool (package $pkg): $path does not run" ;;
      # Gfarm's programs need a gfmd to do anything: check that their libraries resolve.
      gfmd | gfsd | gfkey | gfhost | gfmkdir | gfpcopy | gfrep | gfwhere | gfrm | gfarm2fs)
        ldd "$path" 2>/dev/null | grep -q 'not found' && echo "$tool (package $pkg): $path misses libraries" ;;
    esac
  done
  # PostgreSQL's server (gfmd's backend) is off PATH on Debian.
  local pg pg_ok=false
  for pg in /usr/lib/postgresql/*/bin/postgres; do
    [ -x "$pg" ] && "$pg" --version >/dev/null 2>&1 && pg_ok=true
  done
  $pg_ok || echo "/usr/lib/postgresql/*/bin/postgres (package postgresql): not found or does not run"
  ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || echo "/boot/vmlinuz-*-cloud-amd64 (package linux-image-cloud-amd64): not found"
}

# Every tool must be present and run; otherwise name each one and its package and fail.
verify_tools() {
  local bad
  bad=$(missing_tools)
  if [ -n "$bad" ]; then
    echo "renkei set-up: these tools are missing or broken after installing packages:" >&2
    echo "$bad" | sed 's/^/  /' >&2
    echo "install the packages named above (apt-get install PACKAGE) and run this again" >&2
    return 1
  fi
}

# Install every listed package in ONE apt transaction that names them all, with
# version groups pinned, so apt cannot remove one to satisfy another; then check
# that every package is installed and every tool runs.
install_packages() {
  local missing=() pins=() p
  for p in "${RENKEI_PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  mapfile -t pins < <(version_pins)
  if [ ${#missing[@]} -gt 0 ] || [ ${#pins[@]} -gt 0 ] || [ -n "$(missing_tools)" ]; then
    log "installing packages (missing: ${missing[*]:-none}; version pins: ${pins[*]:-none})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Candidates may have moved with the update: pin again.
    mapfile -t pins < <(version_pins)
    local args=() pinned
    for p in "${RENKEI_PACKAGES[@]}"; do
      pinned=$p
      for q in "${pins[@]}"; do [ "${q%%=*}" = "$p" ] && pinned=$q; done
      args+=("$pinned")
    done
    # Reinstall whatever a tool check found broken (its files may be gone).
    local reinstall=()
    while read -r line; do
      [ -n "$line" ] && reinstall+=("$(sed -n 's/.*(package \([^)]*\)).*/\1/p' <<<"$line")")
    done < <(missing_tools)
    apt-get install -y -qq --no-install-recommends --allow-downgrades \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${args[@]}" \
      > /dev/null 2> >(grep -v '^debconf: delaying package configuration' >&2)
    for p in "${reinstall[@]}"; do
      [ "$p" = linux-image-cloud-amd64 ] && continue
      apt-get install -y -qq --no-install-recommends --reinstall "$p" >/dev/null
    done
  fi
  missing=()
  for p in "${RENKEI_PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "renkei set-up: still not installed after apt-get install: ${missing[*]}" >&2
    return 1
  fi
  verify_tools
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "renkei needs a Rust toolchain (cargo >= 1.85): install it with rustup, then run this again." >&2
    exit 1
  fi
}

start_services() {
  modprobe fuse 2>/dev/null || true
  [ -e /dev/fuse ] || { echo "/dev/fuse is missing: FUSE mounts cannot work here" >&2; exit 1; }
  bash "$(dirname "${BASH_SOURCE[0]}")/../vm-image/libvirt-up.sh"
}

build_release() {
  log "building (cargo build --release)"
  cargo build --release --locked --workspace --bins
}
