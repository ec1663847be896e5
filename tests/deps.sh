#!/bin/sh
# Install the Debian packages the packaging tests need (tests/packaging/run.sh).
# Idempotent and quiet: only packages that are missing are installed.
# Works as root or through sudo.
set -eu

# package:command-that-proves-it-is-installed
NEEDED="rpm:rpmbuild debugedit:find-debuginfo elfutils:eu-strip resource-agents:ocf-tester libxml2-utils:xmllint logrotate:logrotate shellcheck:shellcheck procps:pidof cpio:cpio systemd:systemd-analyze python3:python3 util-linux:unshare"

missing=""
for item in $NEEDED; do
    pkg=${item%%:*}
    cmd=${item#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
        missing="$missing $pkg"
    fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
else
    echo "deps.sh: need root or sudo to install:$missing" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the index only when a first attempt cannot find the packages.
# shellcheck disable=SC2086
if ! $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
