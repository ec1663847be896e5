#!/bin/bash
# Packaging and service-integration checks for guest-heartbeat.
#
# usage: tests/packaging/run.sh
# environment: CARGO_TARGET_DIR (default <workspace>/target)
#
# Builds the RPMs (packaging/rpm/build.sh), checks their file lists, modes,
# config flags and scriptlets, installs them into a temporary root and runs
# the installed guestServer; runs the LSB init scripts through their
# lifecycle for both daemons, the OCF agent through ocf-tester, the
# logrotate configs through logrotate -d, the systemd units through
# systemd-analyze verify, and checks guestServer's syslog output (ident,
# LOCAL5, levels, rate limiting of a guest flood).
#
# Every check prints PASS or FAIL; the last line is "N passed, M failed".
# Needs root (rpm --root, unshare for a private /dev/log). Dependencies:
# tests/deps.sh.
set -u

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
REL=$CARGO_TARGET_DIR/release
HERE=$repo/tests/packaging

W=$(mktemp -d "${TMPDIR:-/tmp}/gh-pack.XXXXXX")
# ocf-tester runs the agent's meta-data as nobody: the path must be readable.
chmod 755 "$W"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    # Daemons we started record themselves in pid files under $W.
    for p in "$W"/*/*.pid "$W"/*.pid; do
        [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null
    done
    rm -rf "$W"
}
trap cleanup EXIT

pass=0
fail=0
n=0
# check NAME CMD... : run CMD, print PASS/FAIL, show the output tail on failure.
check() {
    local name=$1
    shift
    n=$((n + 1))
    if "$@" >"$W/check.$n.log" 2>&1; then
        echo "PASS $name"
        pass=$((pass + 1))
    else
        echo "FAIL $name"
        tail -n 25 "$W/check.$n.log" | sed 's/^/    /'
        fail=$((fail + 1))
    fi
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s.
wait_for() {
    local i=0 max=$(($1 * 10))
    shift
    while [ "$i" -lt "$max" ]; do
        "$@" 2>/dev/null && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
expect_rc() {
    local want=$1
    shift
    "$@"
    local rc=$?
    [ "$rc" -eq "$want" ] || { echo "expected exit $want, got $rc: $*"; return 1; }
}

sh tests/deps.sh || { echo "FAIL dependencies (tests/deps.sh)"; echo "0 passed, 1 failed"; exit 1; }

# ---------------------------------------------------------------- RPM build
RPMS=$W/rpm
check "rpm: build.sh builds the RPMs" packaging/rpm/build.sh "$RPMS"
rpm_named() { find "$RPMS" -name "guest-heartbeat-$1-*.rpm" 2>/dev/null | head -n1; }
SRV=$(rpm_named server)
AGT=$(rpm_named agent)
DBG=$(rpm_named debuginfo)

# modes: "<perms> <path>" for every file of a package.
rpm_modes() { rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$1"; }

rpm_server_files() {
    local want got
    want="/etc/init.d/guestServer
/etc/logrotate.d/guestServer.logrotate
/etc/mtc
/etc/mtc/guestServer.ini
/etc/mtc/tmp
/etc/pmon.d/guestServer.conf
/usr/lib/systemd/system/guestServer.service
/usr/local/bin/guestServer
/var/lib/guestServer"
    got=$(rpm -qlp "$SRV" | sort)
    diff <(echo "$want") <(echo "$got")
}
rpm_agent_files() {
    local want got
    want="/etc/init.d/guestAgent
/etc/logrotate.d/guestAgent.logrotate
/etc/mtc
/etc/mtc/guestAgent.ini
/etc/mtc/tmp
/usr/lib/ocf/resource.d/platform/guestAgent
/usr/lib/systemd/system/guestAgent.service
/usr/local/bin/guestAgent
/var/lib/guestAgent"
    got=$(rpm -qlp "$AGT" | sort)
    diff <(echo "$want") <(echo "$got")
}
rpm_modes_ok() {
    local m
    m=$(rpm_modes "$SRV"; rpm_modes "$AGT")
    echo "$m"
    for want in "-rwx------ /usr/local/bin/guestServer" "-rwx------ /usr/local/bin/guestAgent" \
        "-rw------- /etc/mtc/guestServer.ini" "-rw------- /etc/mtc/guestAgent.ini" \
        "-rwx------ /etc/init.d/guestServer" "-rwx------ /etc/init.d/guestAgent" \
        "-rwxr-xr-x /usr/lib/ocf/resource.d/platform/guestAgent" \
        "-rw-r--r-- /etc/pmon.d/guestServer.conf" \
        "-rw-r--r-- /etc/logrotate.d/guestServer.logrotate" \
        "-rw-r--r-- /etc/logrotate.d/guestAgent.logrotate" \
        "-rw-r--r-- /usr/lib/systemd/system/guestServer.service" \
        "-rw-r--r-- /usr/lib/systemd/system/guestAgent.service"; do
        grep -qxF -- "$want" <<<"$m" || { echo "missing: $want"; return 1; }
    done
}
rpm_config_noreplace() {
    local f
    f=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$SRV" "$AGT")
    echo "$f"
    for c in /etc/mtc/guestServer.ini /etc/mtc/guestAgent.ini /etc/pmon.d/guestServer.conf \
        /etc/logrotate.d/guestServer.logrotate /etc/logrotate.d/guestAgent.logrotate; do
        grep -qxF "cn $c" <<<"$f" || { echo "not %config(noreplace): $c"; return 1; }
    done
    [ "$(rpm -qcp "$SRV" "$AGT" | wc -l)" -eq 5 ]
}
rpm_scripts_listed() {
    local s
    s=$(rpm -qp --scripts "$SRV")
    echo "$s"
    grep -q '^postinstall scriptlet' <<<"$s" && grep -q '^preuninstall scriptlet' <<<"$s" &&
        grep -q 'systemctl enable guestServer.service' <<<"$s" &&
        grep -q 'disable guestServer.service' <<<"$s" || return 1
    s=$(rpm -qp --scripts "$AGT")
    echo "$s"
    grep -q 'disable guestAgent.service' <<<"$s" && ! grep -q 'systemctl enable' <<<"$s"
}
# Run a scriptlet with a fake systemctl that records its arguments.
run_scriptlet() { # rpm tag arg -> prints the systemctl calls
    local fake=$W/fakebin
    mkdir -p "$fake"
    printf '#!/bin/sh\necho "systemctl $*" >>"%s/systemctl.calls"\n' "$W" >"$fake/systemctl"
    chmod 755 "$fake/systemctl"
    rm -f "$W/systemctl.calls"
    rpm -qp --qf "%{$2}" "$1" >"$W/scriptlet.sh"
    PATH=$fake:$PATH sh "$W/scriptlet.sh" "$3" || return 1
    cat "$W/systemctl.calls" 2>/dev/null
    return 0
}
rpm_scriptlets_behave() {
    local c
    c=$(run_scriptlet "$SRV" POSTIN 1) && echo "server %post 1: $c" && grep -q 'enable guestServer.service' <<<"$c" || return 1
    c=$(run_scriptlet "$SRV" POSTIN 2) && echo "server %post 2: $c" && ! grep -q enable <<<"$c" || return 1
    c=$(run_scriptlet "$SRV" PREUN 0) && echo "server %preun 0: $c" && grep -q 'disable guestServer.service' <<<"$c" || return 1
    c=$(run_scriptlet "$SRV" PREUN 1) && echo "server %preun 1: $c" && [ -z "$c" ] || return 1
    c=$(run_scriptlet "$AGT" POSTIN 1) && echo "agent %post 1: $c" && ! grep -q enable <<<"$c" || return 1
    c=$(run_scriptlet "$AGT" PREUN 0) && echo "agent %preun 0: $c" && grep -q 'disable guestAgent.service' <<<"$c"
}
rpm_debuginfo() {
    rpm -qlp "$DBG" | tee /dev/stderr | grep -q '/usr/lib/debug/usr/local/bin/guestServer.*\.debug$'
}
check "rpm: server file list (rpm -qlp)" rpm_server_files
check "rpm: agent file list (rpm -qlp)" rpm_agent_files
check "rpm: file modes" rpm_modes_ok
check "rpm: config files are %config(noreplace)" rpm_config_noreplace
check "rpm: scriptlets (rpm -q --scripts)" rpm_scripts_listed
check "rpm: scriptlets enable/disable units (fake systemctl)" rpm_scriptlets_behave
check "rpm: debuginfo package has guestServer debug info" rpm_debuginfo

# ------------------------------------------------------ install into a root
ROOT=$W/root
rpm_install() {
    mkdir -p "$ROOT"
    rpm --root "$ROOT" --initdb &&
        rpm --root "$ROOT" --nodeps --noscripts --force-debian -i "$SRV" "$AGT" "$DBG" &&
        rpm --root "$ROOT" -qa | sort &&
        rpm --root "$ROOT" -V --nodeps guest-heartbeat-server guest-heartbeat-agent
}
installed_modes() {
    local f
    f=$(cd "$ROOT" && stat -c '%a %U %n' usr/local/bin/guestServer usr/local/bin/guestAgent \
        etc/mtc/guestServer.ini etc/mtc/guestAgent.ini etc/init.d/guestServer \
        usr/lib/ocf/resource.d/platform/guestAgent)
    echo "$f"
    [ "$f" = "700 root usr/local/bin/guestServer
700 root usr/local/bin/guestAgent
600 root etc/mtc/guestServer.ini
600 root etc/mtc/guestAgent.ini
700 root etc/init.d/guestServer
755 root usr/lib/ocf/resource.d/platform/guestAgent" ]
}
installed_help() {
    "$ROOT/usr/local/bin/guestServer" --help | tee /dev/stderr | grep -q '^Usage: guestServer' &&
        "$ROOT/usr/local/bin/guestAgent" --help | grep -q 'Usage: guestAgent'
}
# Foreground start of the installed guestServer with the installed ini,
# everything else in a temp dir; SIGTERM after 2 s must give exit 0.
installed_foreground() {
    local d=$W/fg
    mkdir -p "$d/chan" "$d/state"
    timeout --preserve-status -s TERM 2 "$ROOT/usr/local/bin/guestServer" -f \
        --config "$ROOT/etc/mtc/guestServer.ini" --channel-dir "$d/chan" \
        --pidfile "$d/gs.pid" --health-file "$d/gs.info" --state-dir "$d/state" \
        --listen 127.0.0.1:0 --agent 127.0.0.1:9 --hostname pack-test 2>"$d/stderr"
    local rc=$?
    cat "$d/stderr"
    [ "$rc" -eq 0 ] && grep -q 'starting' "$d/stderr" && [ -s "$d/gs.info" ] && [ ! -e "$d/gs.pid" ]
}
check "install: rpm --root --nodeps, rpm -V clean" rpm_install
check "install: installed modes and owners" installed_modes
check "install: installed guestServer/guestAgent --help" installed_help
check "install: installed guestServer -f starts and exits 0 on SIGTERM" installed_foreground

# ----------------------------------------------- syslog receiver + helpers
# A syslog socket for the daemons in a temp dir (guestServer --syslog-socket).
LOGSOCK=$W/log.sock
LOGOUT=$W/syslog.out
python3 "$HERE/syslogd.py" "$LOGSOCK" "$LOGOUT" &
PIDS+=($!)
wait_for 5 test -S "$LOGSOCK" || echo "warning: syslog receiver did not start"

# Runs "$@" in a private mount namespace whose /dev/log is a syslog receiver
# writing to $W/devlog.out (guestAgent has no --syslog-socket flag).
with_devlog() {
    # shellcheck disable=SC2016 # the script is for the inner bash
    unshare -m --propagation private bash -c '
        set -e
        W=$1; HERE=$2; shift 2
        mkdir -p "$W/olddev"
        mount --rbind /dev "$W/olddev"
        mount -t tmpfs -o mode=755 devtmp /dev
        for d in null zero full random urandom tty; do
            touch "/dev/$d"; mount --bind "$W/olddev/$d" "/dev/$d"
        done
        ln -s /proc/self/fd /dev/fd
        python3 "$HERE/syslogd.py" /dev/log "$W/devlog.out" &
        logpid=$!
        i=0; while [ ! -S /dev/log ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
        set +e
        "$@"; rc=$?
        kill $logpid
        exit $rc
    ' with_devlog "$W" "$HERE" "$@"
}

# ---------------------------------------------------------- init scripts
# Lifecycle of an LSB init script against a temp dir:
# lsb_lifecycle NAME PREFIX DIR EXTRA_ARGS...
lsb_lifecycle() (
    local name=$1 prefix=$2 d=$3
    shift 3
    local script=$repo/etc/init.d/$name pid=$d/$name.pid
    mkdir -p "$d/state" "$d/chan"
    export "${prefix}_BIN=$REL/$name" "${prefix}_PIDFILE=$pid" \
        "${prefix}_CONFIG=$repo/etc/mtc/$name.ini" \
        "${prefix}_ARGS=-l --health-file $d/$name.info --state-dir $d/state $*" \
        "${prefix}_PLATFORM_CONF=$d/none"
    set -x
    expect_rc 3 "$script" status || return 1
    expect_rc 0 "$script" stop || return 1                    # stop when stopped
    expect_rc 0 "$script" start || return 1
    alive "$pid" || return 1
    local p1
    p1=$(cat "$pid")
    [ -s "$d/$name.info" ] || return 1
    expect_rc 0 "$script" start || return 1                   # already running
    [ "$(cat "$pid")" = "$p1" ] || return 1
    # The daemon itself refuses a duplicate of a live pid file (guestServer
    # exits 1, guestAgent 0 like the original).
    "$REL/$name" -f --config "$repo/etc/mtc/$name.ini" --pidfile "$pid" \
        --health-file "$d/dup.info" --state-dir "$d/state" "$@" 2>"$d/dup.err"
    local rc=$?
    [ "$rc" -le 1 ] && grep -qi 'refusing to start duplicate' "$d/dup.err" || return 1
    [ "$(cat "$pid")" = "$p1" ] || return 1
    expect_rc 0 "$script" status || return 1
    expect_rc 0 "$script" reload || return 1
    sleep 0.3
    kill -0 "$p1" || return 1                                 # SIGHUP does not kill
    expect_rc 0 "$script" restart || return 1
    alive "$pid" || return 1
    [ "$(cat "$pid")" != "$p1" ] || return 1
    kill -0 "$p1" 2>/dev/null && return 1
    expect_rc 0 "$script" stop || return 1
    [ ! -e "$pid" ] || return 1
    expect_rc 3 "$script" status || return 1
    expect_rc 7 "$script" reload || return 1
    # Stale pid file: a pid that is dead.
    sh -c 'echo $$' >"$pid"
    expect_rc 1 "$script" status || return 1
    expect_rc 0 "$script" start || return 1
    alive "$pid" || return 1
    expect_rc 0 "$script" stop || return 1
    expect_rc 2 "$script" bogus || return 1
    env "${prefix}_BIN=$d/missing" "$script" start
    [ $? -eq 5 ] || return 1
)
SRV_ARGS="--channel-dir $W/gs-init/chan --listen 127.0.0.1:0 --agent 127.0.0.1:9 --syslog-socket $LOGSOCK"
AGT_DIR=$W/ga-init
mkdir -p "$AGT_DIR"
: >"$AGT_DIR/mtc.conf"
: >"$AGT_DIR/nfv.ini"
AGT_ARGS="--mtc-conf $AGT_DIR/mtc.conf --nfv-config $AGT_DIR/nfv.ini --http 127.0.0.1:0 --listen 127.0.0.1:0 --mtc-listen 127.0.0.1:0 --mtc-addr 127.0.0.1:9"
# shellcheck disable=SC2086
check "init.d/guestServer: status/start/duplicate/reload/restart/stop/stale pid/usage/not installed" \
    lsb_lifecycle guestServer GUESTSERVER "$W/gs-init" $SRV_ARGS
export -f lsb_lifecycle expect_rc alive
export repo REL
# shellcheck disable=SC2086
check "init.d/guestAgent: status/start/duplicate/reload/restart/stop/stale pid/usage/not installed" \
    with_devlog lsb_lifecycle guestAgent GUESTAGENT "$AGT_DIR" $AGT_ARGS

# ------------------------------------------------------------------ OCF
ocf_test() {
    local d=$W/ocf
    mkdir -p "$d/state"
    chmod 755 "$d"
    : >"$d/mtc.conf"
    : >"$d/nfv.ini"
    install -m 0755 "$repo/etc/ocf/guestAgent" "$d/guestAgent.ocf"
    with_devlog ocf-tester -v -n guestAgent \
        -o binary="$REL/guestAgent" -o config="$repo/etc/mtc/guestAgent.ini" \
        -o pid="$d/guestAgent.pid" -o status_file="$d/guestAgent.info" \
        -o args="--state-dir $d/state --mtc-conf $d/mtc.conf --nfv-config $d/nfv.ini --http 127.0.0.1:0 --listen 127.0.0.1:0 --mtc-listen 127.0.0.1:0 --mtc-addr 127.0.0.1:9" \
        "$d/guestAgent.ocf"
}
ocf_metadata() {
    "$repo/etc/ocf/guestAgent" meta-data | xmllint --noout --dtdvalid /usr/share/resource-agents/ra-api-1.dtd -
}
ocf_not_installed() {
    OCF_RESKEY_binary=$W/missing OCF_RESKEY_pid=$W/ocf-none.pid "$repo/etc/ocf/guestAgent" monitor
    [ $? -eq 7 ] || return 1
    OCF_RESKEY_binary=$W/missing "$repo/etc/ocf/guestAgent" validate-all
    [ $? -eq 5 ] || return 1
    OCF_RESKEY_binary=$REL/guestAgent OCF_RESKEY_config=$W/missing.ini "$repo/etc/ocf/guestAgent" validate-all
    [ $? -eq 6 ]
}
check "ocf: meta-data validates against ra-api-1.dtd" ocf_metadata
check "ocf: ocf-tester passes (start/monitor/stop/reload, real guestAgent)" ocf_test
check "ocf: not installed / not configured exit codes" ocf_not_installed

# ------------------------------------------------------------ logrotate
logrotate_debug() {
    for f in "$repo"/etc/logrotate.d/*.logrotate; do
        logrotate -d -s "$W/logrotate.state" "$f" 2>&1 | tee /dev/stderr | grep -qi 'error' && return 1
    done
    return 0
}
# A real rotation of a copy pointed at a temp file.
logrotate_rotates() {
    local d=$W/lr
    mkdir -p "$d"
    head -c 11000000 /dev/zero >"$d/guestServer.log"
    sed "s|/var/log/guestServer.log|$d/guestServer.log|" "$repo/etc/logrotate.d/guestServer.logrotate" >"$d/conf"
    logrotate -s "$d/state" "$d/conf" && ls -l "$d" && [ -e "$d/guestServer.log.1" ] &&
        [ "$(stat -c %a "$d/guestServer.log")" = 640 ]
}
check "logrotate: logrotate -d accepts both configs" logrotate_debug
check "logrotate: a 10M+ log is rotated, new file 0640" logrotate_rotates

# -------------------------------------------------------------- systemd
units_verify() {
    local d=$W/units out
    mkdir -p "$d"
    for u in guestServer guestAgent; do
        sed "s|/usr/local/bin/$u|$REL/$u|" "$repo/etc/systemd/$u.service" >"$d/$u.service"
    done
    out=$(cd "$d" && systemd-analyze verify guestServer.service guestAgent.service 2>&1)
    echo "$out"
    # Only complaints about units outside this package are acceptable.
    ! grep -v -e 'config.service' -e 'syslog.service' -e 'pmon.service' <<<"$out" | grep -q .
}
units_sandbox() {
    local f=$repo/etc/systemd/guestServer.service
    grep -q '^ReadWritePaths=.*/var/lib/libvirt/qemu' "$f" && grep -q '^ProtectSystem=strict' "$f" &&
        grep -q '^RestrictAddressFamilies=.*AF_UNIX' "$f" &&
        grep -q '^After=network.target syslog.service config.service' "$f" &&
        grep -q '^Before=pmon.service' "$f" && grep -q '^PIDFile=/var/run/guestServer.pid' "$f"
}
check "systemd: units pass systemd-analyze verify" units_verify
check "systemd: guestServer ordering and sandbox reach the libvirt dir" units_sandbox

# -------------------------------------------------------------- syslog
# guestServer in daemon mode logging to our receiver: ident, LOCAL5, levels,
# and a guest flood of malformed lines is rate-limited.
syslog_test() {
    local d=$W/sl uuid=0f2b0c4e-8c1a-4d2e-9b7a-1c2d3e4f5a6b
    mkdir -p "$d/chan" "$d/state"
    : >"$LOGOUT"
    # A fake QEMU channel that floods 5000 malformed lines once connected.
    python3 - "$d/chan/cgcs.heartbeat.$uuid.sock" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1); s.settimeout(20)
c, _ = s.accept()
for _ in range(50):
    c.sendall(b"\nnot json\n" * 100)
time.sleep(3)
EOF
    local flood=$!
    PIDS+=("$flood")
    wait_for 5 test -S "$d/chan/cgcs.heartbeat.$uuid.sock" || return 1
    "$REL/guestServer" --config "$repo/etc/mtc/guestServer.ini" --channel-dir "$d/chan" \
        --pidfile "$d/gs.pid" --health-file "$d/gs.info" --state-dir "$d/state" \
        --listen 127.0.0.1:0 --agent 127.0.0.1:9 --syslog-socket "$LOGSOCK" --log-level debug || return 1
    wait_for 5 alive "$d/gs.pid" || return 1
    local pid
    pid=$(cat "$d/gs.pid")
    wait "$flood"
    kill -USR2 "$pid"
    sleep 0.5
    kill -TERM "$pid"
    wait_for 5 test ! -e "$d/gs.pid" || return 1
    grep "guestServer\[$pid\]" "$LOGOUT" | tee "$d/ours" | head -n 40
    local total malformed
    total=$(wc -l <"$d/ours")
    malformed=$(grep -c 'malformed' "$d/ours")
    echo "lines from pid $pid: $total; malformed-line warnings: $malformed"
    [ "$total" -gt 0 ] || return 1
    # Every line carries facility LOCAL5 (21): priority 168..175.
    ! grep -v -E '^<1(6[89]|7[0-5])>' "$d/ours" | grep -q . || { echo "non-LOCAL5 line"; return 1; }
    grep -q '^<174>' "$d/ours" || { echo "no info (174) line"; return 1; }
    grep -q '^<172>' "$d/ours" || { echo "no warning (172) line"; return 1; }
    grep -q '^<175>' "$d/ours" || { echo "no debug (175) line"; return 1; }
    # 5000 malformed lines must not give 5000 log lines.
    if [ "$malformed" -lt 1 ] || [ "$malformed" -gt 50 ]; then
        echo "flood not rate-limited"
        return 1
    fi
}
check "syslog: daemon logs ident guestServer, LOCAL5, levels; guest flood rate-limited" syslog_test

# ------------------------------------------------------------ lint
lint_scripts() {
    local rc=0
    for f in etc/init.d/guestServer etc/init.d/guestAgent etc/ocf/guestAgent packaging/rpm/build.sh tests/deps.sh; do
        sh -n "$f" || rc=1
    done
    bash -n tests/packaging/run.sh || rc=1
    shellcheck etc/init.d/guestServer etc/init.d/guestAgent etc/ocf/guestAgent \
        packaging/rpm/build.sh tests/deps.sh tests/packaging/run.sh || rc=1
    return $rc
}
check "lint: sh -n and shellcheck on every script" lint_scripts

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
