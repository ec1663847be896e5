#!/bin/sh
# Build the guest-heartbeat RPMs from the workspace's release build.
#
# usage: packaging/rpm/build.sh [OUTDIR]
#   OUTDIR            where the .rpm files go (default: <target>/rpm)
# environment:
#   CARGO_TARGET_DIR  cargo's target directory (default: <workspace>/target)
#   GH_RPM_NO_BUILD=1 skip `cargo build` and package the binaries already there
#
# Needs rpmbuild (Debian: apt-get install rpm debugedit). The -agent package
# is built when the workspace has a guestAgent binary.
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
out=${1:-$target/rpm}
spec=$repo/packaging/rpm/guest-heartbeat.spec

cd "$repo"
if [ "${GH_RPM_NO_BUILD:-0}" != 1 ]; then
    cargo build --release --locked --bin guestServer
    if grep -q '^name = "guestAgent"' Cargo.toml; then
        cargo build --release --locked --bin guestAgent
    fi
fi

bindir=$target/release
[ -x "$bindir/guestServer" ] || { echo "build.sh: $bindir/guestServer missing" >&2; exit 1; }
with=""
[ -x "$bindir/guestAgent" ] && with="--with agent"

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }

top=$(mktemp -d "${TMPDIR:-/tmp}/gh-rpmbuild.XXXXXX")
trap 'rm -rf "$top"' EXIT INT TERM

# shellcheck disable=SC2086
rpmbuild -bb --quiet $with \
    --define "_topdir $top" \
    --define "gh_srcdir $repo" \
    --define "gh_bindir $bindir" \
    --define "gh_version $version" \
    "$spec"

mkdir -p "$out"
find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \;
ls -1 "$out"/*.rpm
