# Shared set-up for scripts/demo.sh and scripts/test.sh on a Debian machine
# (run as root). Installs only what is missing, finds the Rust toolchain, and
# starts the services the demo and tests need.

# Debian packages renkei's demo and tests use.
RENKEI_PACKAGES=(
  fuse3 libfuse3-dev pkg-config            # the FUSE mount
  libvirt-daemon-system libvirt-dev        # VM hosting (vpe)
  qemu-system-x86 qemu-utils               # guests and their disks
  linux-image-cloud-amd64 busybox-static cpio e2fsprogs   # the tiny test VM image
  iproute2 iputils-ping iperf3             # WAN emulator and its checks
  sshfs openssh-server openssh-client      # baselines in benchmarks
  rsync git sqlite3 tar                    # real tools on the mount
  ca-certificates curl
  chromium chromium-driver                 # the status page in a real browser (monitoring tests)
)

log() { printf '\n== %s\n' "$*" >&2; }

install_packages() {
  local missing=()
  for p in "${RENKEI_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
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
