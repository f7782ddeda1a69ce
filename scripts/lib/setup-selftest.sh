#!/usr/bin/env bash
# CI check of the set-up itself (issue: the first command failed on a fresh
# machine because apt removed qemu-utils while installing qemu-system-x86).
#  1. Remove a listed tool's package behind the set-up's back, run the set-up:
#     the tool must be back and run.
#  2. The final tool check must fail loudly, naming tool and package, when a
#     tool is missing.
# Run as root on a Debian machine where `install_packages` already succeeded.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/setup.sh

log "set-up self-test 1: remove qemu-utils, run the set-up, qemu-img must be back"
dpkg -r --force-depends qemu-utils >/dev/null 2>&1
if command -v qemu-img >/dev/null 2>&1; then
  echo "setup-selftest: qemu-img still present after removing qemu-utils" >&2
  exit 1
fi
install_packages
qemu-img --version | head -n 1
pkg_installed qemu-utils || { echo "setup-selftest: qemu-utils not reinstalled" >&2; exit 1; }
# Every group stays consistent: qemu-utils at qemu-system-x86's version.
[ "$(pkg_version qemu-utils)" = "$(pkg_version qemu-system-x86)" ] || {
  echo "setup-selftest: qemu-utils $(pkg_version qemu-utils) != qemu-system-x86 $(pkg_version qemu-system-x86)" >&2
  exit 1
}

log "set-up self-test 2: the final check fails loudly when a tool is missing"
out=$( (RENKEI_TOOLS+=("renkei-no-such-tool:renkei-no-such-package"); verify_tools) 2>&1) && {
  echo "setup-selftest: verify_tools passed with a missing tool" >&2
  exit 1
}
grep -q "renkei-no-such-tool (package renkei-no-such-package): not found" <<<"$out" || {
  echo "setup-selftest: the failure does not name the tool and its package:" >&2
  echo "$out" >&2
  exit 1
}
echo "$out"
log "set-up self-test passed"
