#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every
# test of the workspace and the packaging/service-integration checks.
#
# usage: tests/run.sh            (as root, or with passwordless sudo, for the
#                                 packages and the rpm --root install)
set -euo pipefail
cd "$(dirname "$0")/.."

tests/deps.sh
cargo test --workspace --locked
tests/packaging/run.sh
