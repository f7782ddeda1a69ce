#!/usr/bin/env bash
# The Debian package on this machine (issue 17): build it with cargo-deb,
# install it with dpkg, have systemd-analyze verify every unit, check what
# it installed runs, and purge it again (also on failure). Run by
# scripts/test.sh after the test suite, as root.
set -euo pipefail
cd "$(dirname "$0")/../.."

DEB_TOOLS="$PWD/target/cargo-deb"
[ -x "$DEB_TOOLS/bin/cargo-deb" ] || cargo install --locked --quiet cargo-deb --version 3.8.0 --root "$DEB_TOOLS"
export PATH="$DEB_TOOLS/bin:$PATH"

deb=$(bash scripts/package-deb.sh | tail -n 1)
[ -f "$deb" ] || { echo "package-deb.sh printed no package path (got '$deb')" >&2; exit 1; }
echo "built $deb ($(du -h "$deb" | cut -f1))"

if dpkg -s renkei >/dev/null 2>&1; then
    echo "a renkei package is installed on this machine already: not replacing it" >&2
    exit 1
fi
trap 'dpkg --purge renkei >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb"

units=(renkei-meta renkei-server vpe-serve vpe-agent)
for u in "${units[@]}"; do
    f=/lib/systemd/system/$u.service
    [ -f "$f" ] || { echo "the package did not install $f" >&2; exit 1; }
done
( cd /lib/systemd/system && systemd-analyze verify "${units[@]/%/.service}" )
echo "systemd-analyze verify accepts ${units[*]}"

for b in renkei renkei-meta renkei-server vpe; do
    "/usr/bin/$b" --help >/dev/null || { echo "/usr/bin/$b does not run" >&2; exit 1; }
done
[ -x /usr/sbin/mount.renkei ] || { echo "no /usr/sbin/mount.renkei" >&2; exit 1; }
renkei-meta --config /etc/renkei/meta.toml --check
id renkei >/dev/null || { echo "the package made no renkei user" >&2; exit 1; }

dpkg --purge renkei
trap - EXIT
[ ! -e /usr/bin/renkei ] || { echo "purge left /usr/bin/renkei" >&2; exit 1; }
echo "package installed, verified and purged"
