#!/bin/bash
# systemd-smoke.sh: run dist/meshgate.service under a real systemd and check what the
# unit promises (docs/serving.md, "systemd"): READY=1 before "active", STATUS= naming
# the listeners, JSON logs in the journal, a dynamic user reading the token through
# LoadCredential=, SIGHUP reload (reloading -> active), a clean stop (STOPPING=1), the
# sandbox really applied, and the `systemd-analyze security` rating.
#
# Why a container: the unit needs systemd as PID 1, and CI machines and developer VMs
# often have something else there. systemd-nspawn boots the host's own Debian tree
# (an overlay of / with a throw-away tmpfs on top, so nothing on the host changes),
# with a private network (the host's enabled services, if any start, cannot bind the
# host's ports) into basic.target, so only the units we start run.
#
# Usage (root, Debian 12 or later, systemd-container installed or installable):
#   dist/systemd-smoke.sh [path/to/meshgate]     # default: target/debug/meshgate
# Prints PASS/FAIL per check and exits with the number of FAILs (0 = all passed).
# Bounded: the whole run is under `timeout` (MESHGATE_SMOKE_TIMEOUT, 300 s default),
# every command in the container under its own, and the container is torn down on exit.
# SC2016: $(...) in single quotes is expanded in the container, on purpose.
# SC2317: cleanup() runs from the EXIT trap.
# shellcheck disable=SC2016,SC2317
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${1:-${MESHGATE_BIN:-$repo/target/debug/meshgate}}
unit=${MESHGATE_UNIT:-$here/meshgate.service}
conf=${MESHGATE_CONF:-$here/meshgate.toml}
limit=${MESHGATE_SMOKE_TIMEOUT:-300}

# The whole run under one timeout: re-exec under it once (the variable marks the child).
if [ -z "${MESHGATE_SMOKE_INNER:-}" ]; then
    # Without --foreground timeout signals its whole process group: this script,
    # systemd-nspawn (which then powers the container off) and the commands waited for.
    MESHGATE_SMOKE_INNER=1 exec timeout -k 45 "$limit" "$0" "$@"
fi

die() { echo "systemd-smoke: $*" >&2; exit 100; }
[ "$(id -u)" = 0 ] || die "run as root (systemd-nspawn and overlay mounts need it)"
[ -x "$bin" ] || die "no meshgate binary at $bin; build it (cargo build) or pass its path"
[ -f "$unit" ] || die "no unit at $unit"
if ! command -v systemd-nspawn >/dev/null; then
    echo "systemd-smoke: installing systemd-container (for systemd-nspawn)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd-container >/dev/null ||
        die "systemd-nspawn is missing and apt-get install systemd-container failed"
fi

fails=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; fails=$((fails + 1)); }
note() { printf '      %s\n' "$*"; }
# check NAME COMMAND...: PASS when the command succeeds.
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }

work=$(mktemp -d /tmp/meshgate-smoke.XXXXXX)
root=$work/root
nspawn_pid=
leader=

cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # SIGTERM to nspawn powers the container off; give it 8 s, then kill it.
        kill -TERM "$nspawn_pid" 2>/dev/null
        for _ in $(seq 1 80); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn_pid" 2>/dev/null
        wait "$nspawn_pid" 2>/dev/null
    fi
    umount "$root" 2>/dev/null || umount -l "$root" 2>/dev/null
    umount "$work/rw" 2>/dev/null || umount -l "$work/rw" 2>/dev/null
    # Never a recursive rm here: $root is an overlay of /. Only empty directories go.
    rm -f "$work/console.log"
    rmdir "$root" "$work/rw" "$work" 2>/dev/null ||
        echo "systemd-smoke: left $work behind (still mounted?)" >&2
}
trap cleanup EXIT
trap 'echo "systemd-smoke: stopped by a signal (timeout after ${limit} s?); cleaning up" >&2; exit 101' INT TERM

# The tree: / read-only below, a tmpfs on top. Nested mounts (/proc, /sys, /tmp if it
# is a tmpfs) are not crossed, so they show as empty directories, which nspawn fills.
mkdir -p "$work/rw" "$root"
mount -t tmpfs -o mode=0755 meshgate-smoke "$work/rw" || die "mount tmpfs on $work/rw failed"
mkdir -p "$work/rw/upper" "$work/rw/work"
mount -t overlay meshgate-smoke -o "lowerdir=/,upperdir=$work/rw/upper,workdir=$work/rw/work" "$root" ||
    die "overlay of / failed (is / itself something overlayfs cannot stack on?)"
[ -x "$root/lib/systemd/systemd" ] || die "no /lib/systemd/systemd in the tree (is /usr a separate mount?)"

# What the .deb installs, and what an admin adds.
install -m 0755 "$bin" "$root/usr/bin/meshgate"
install -m 0644 "$unit" "$root/etc/systemd/system/meshgate.service"
mkdir -p "$root/etc/meshgate"
install -m 0644 "$conf" "$root/etc/meshgate/meshgate.toml"
head -c 32 /dev/urandom | base64 >"$root/etc/meshgate/token"
chmod 0600 "$root/etc/meshgate/token"
chown root:root "$root/etc/meshgate/token"
rm -rf "$root/etc/systemd/system/meshgate.service.d" "$root/etc/systemd/system/"*.wants/meshgate.service

# On a host booted with systemd nspawn makes its own scope; elsewhere (PID 1 is not
# systemd) it stays in the cgroup it was started in.
nspawn_args=(--quiet --register=no --private-network -M meshgate-smoke -D "$root")
[ -d /run/systemd/system ] || nspawn_args+=(--keep-unit)
systemd-nspawn "${nspawn_args[@]}" -b systemd.unit=basic.target >"$work/console.log" 2>&1 </dev/null &
nspawn_pid=$!

for _ in $(seq 1 300); do
    for p in $(pgrep -P "$nspawn_pid" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] && leader=$p
    done
    [ -n "$leader" ] && break
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$leader" ]; then
    fail "boot: systemd-nspawn started systemd as PID 1"
    sed 's/^/      console: /' "$work/console.log" | tail -20
    exit "$fails"
fi

# ct CMD...: run CMD in the container (all its namespaces, its root), bounded.
ct() { timeout 30 nsenter -t "$leader" -a -- "$@"; }
# ctsh SCRIPT: the same through sh -c.
ctsh() { timeout 30 nsenter -t "$leader" -a -- /bin/sh -c "$1"; }

state=
for _ in $(seq 1 600); do
    state=$(ct systemctl is-system-running 2>/dev/null)
    case $state in running | degraded) break ;; esac
    sleep 0.1
done
case $state in
running | degraded) pass "boot: systemd $(ct systemctl --version | sed -n '1s/systemd //p') is PID 1 in the container (system $state)" ;;
*)
    fail "boot: the container's systemd reached basic.target (state: ${state:-none})"
    sed 's/^/      console: /' "$work/console.log" | tail -20
    exit "$fails"
    ;;
esac
# Debug level: the journal then names each sd_notify message (READY=1, RELOADING=1, STOPPING=1).
ct systemd-analyze log-level debug

# --- start -------------------------------------------------------------------------
ct systemctl start meshgate
check "start: systemctl start meshgate returned 0" [ $? = 0 ]
active=$(ct systemctl is-active meshgate)
check "start: is-active = $active" [ "$active" = active ]
check "start: READY=1 came before systemd called it started" ctsh \
    'journalctl -o cat --no-pager | grep -E "^meshgate.service: (Got notification message from PID [0-9]+ \(.*READY=1|Changed start -> running)" | head -2 | paste -sd" " | grep -q "READY=1.*start -> running"'
status_line=$(ct systemctl status meshgate --no-pager 2>/dev/null | grep -m1 'Status:')
note "$(sed "s/^ *//" <<<"$status_line")"
check "status: STATUS= names the listener (http://127.0.0.1:18789)" \
    grep -q 'Status: "listening on http://127.0.0.1:18789' <<<"$status_line"
health=$(ct curl -sS -m 5 http://127.0.0.1:18789/healthz)
check "healthz: curl http://127.0.0.1:18789/healthz = '$health'" [ "$health" = ok ]

json=$(ct journalctl -u meshgate -o cat --no-pager | grep -m1 '^{')
note "$json"
if command -v jq >/dev/null; then
    check "journal: the log lines are JSON (timestamp, level, message, target)" \
        jq -e 'has("timestamp") and has("level") and has("message") and has("target")' <<<"$json" >/dev/null
else
    check "journal: the log lines are JSON (timestamp, level, message, target)" \
        grep -Eq '^\{"timestamp":".*"level":".*"message":".*"target":' <<<"$json"
fi

pid=$(ct systemctl show -P MainPID meshgate)
# What the process itself wrote (stdout and stderr: _TRANSPORT=stdout), not systemd's
# lines about it (which between fork and exec carry the same PID).
own=$(ct journalctl _SYSTEMD_UNIT=meshgate.service _TRANSPORT=stdout -o cat --no-pager)
plain=$(grep -v '^{' <<<"$own" | grep -c .)
check "journal: every line meshgate wrote is JSON ($(grep -c . <<<"$own") lines, $plain not)" \
    [ "$plain" = 0 -a -n "$own" ]
[ "$plain" = 0 ] || grep -v '^{' <<<"$own" | head -3 | sed 's/^/      not JSON: /'

# --- who runs it, with what ----------------------------------------------------------
uid=$(ct awk '/^Uid:/ {print $2}' "/proc/$pid/status")
user=$(ct getent passwd "$uid" | cut -d: -f1,5)
note "main PID $pid runs as uid $uid ($user)"
# systemd's dynamic range is 61184..65519 (man systemd.exec, DynamicUser=).
check "user: a dynamic user (uid $uid in 61184..65519, named by nss-systemd)" \
    test "${uid:-0}" -ge 61184 -a "${uid:-0}" -le 65519 -a "${user%%:*}" = meshgate
check "sandbox: no capabilities, no_new_privs, a seccomp filter" ctsh \
    "grep -q '^CapEff:[[:space:]]*0000000000000000' /proc/$pid/status && grep -q '^CapBnd:[[:space:]]*0000000000000000' /proc/$pid/status && grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$pid/status && grep -q '^Seccomp:[[:space:]]*2' /proc/$pid/status"
check "threads: the connection threads run (mg-conn-0)" ctsh \
    "grep -qx 'mg-conn-0' /proc/$pid/task/*/comm"
check "limits: the soft open-file limit was raised to the hard one under the seccomp filter" ctsh \
    "awk '/^Max open files/ {exit !(\$4 == \$5)}' /proc/$pid/limits"
check "sandbox: PrivateUsers (a user namespace mapping root and the service's user only)" ctsh \
    "[ \$(wc -l </proc/$pid/uid_map) = 2 ] && grep -Eq '^ *0 +0 +1\$' /proc/$pid/uid_map"
check "sandbox: / read-only, /proc with hidepid=invisible,subset=pid (ProtectSystem, ProtectProc, ProcSubset)" ctsh \
    "grep -Eq ' / / ro,' /proc/$pid/mountinfo && grep -Eq ' /proc .*proc proc .*hidepid=invisible,subset=pid' /proc/$pid/mountinfo"
check "credential: ExecStart's --token-file is \$CREDENTIALS_DIRECTORY/token" ctsh \
    "tr '\\0' ' ' </proc/$pid/cmdline | grep -q -- '--token-file /run/credentials/meshgate.service/token'"
check "credential: the copy is the service user's, 0400, equal to /etc/meshgate/token" ctsh \
    "[ \"\$(stat -c '%u %a' /run/credentials/meshgate.service/token)\" = '$uid 400' ] && cmp -s /etc/meshgate/token /run/credentials/meshgate.service/token"
check "credential: the service user cannot read /etc/meshgate/token itself" ctsh \
    "! setpriv --reuid=$uid --regid=$uid --clear-groups cat /etc/meshgate/token >/dev/null 2>&1"

# --- reload ----------------------------------------------------------------------------
mark=$(ct date +%s.%N)
ct systemctl reload meshgate
check "reload: systemctl reload meshgate returned 0" [ $? = 0 ]
sleep 0.5
reload_log=$(ct journalctl --since "@$mark" -o cat --no-pager |
    grep -E 'SIGHUP|meshgate.service: (Got notification message.*(RELOADING|READY)=1|Changed (running -> reload|reload -> running))|Reload(ing|ed) meshgate')
sed 's/^/      /' <<<"$reload_log"
check "reload: meshgate logged the SIGHUP re-read" grep -q '"message":"SIGHUP: ' <<<"$reload_log"
check "reload: RELOADING=1 then READY=1 (reloading -> active)" \
    grep -q 'RELOADING=1.*READY=1' <<<"$(grep -oE '(RELOADING|READY)=1' <<<"$reload_log" | paste -sd' ')"
active=$(ct systemctl is-active meshgate)
check "reload: is-active = $active afterwards" [ "$active" = active ]

# --- the token through the credential, on a listener that needs one ------------------
# A veth pair in the container's private network gives a non-loopback address.
ctsh 'ip link add mg0 type veth peer name mg1 && ip addr add 10.99.0.1/24 dev mg0 && ip link set mg0 up && ip link set mg1 up'
ctsh 'printf "bind = [\"loopback\", \"10.99.0.1\"]\nport = 18789\n" >/etc/meshgate/meshgate.toml'
ct systemctl restart meshgate
code() { ctsh "curl -s -m 5 -o /dev/null -w '%{http_code}' $1 http://10.99.0.1:18789/status"; }
c_none=$(code "")
c_good=$(code '-H "Authorization: Bearer $(cat /etc/meshgate/token)"')
c_bad=$(code '-H "Authorization: Bearer not-the-token-0123456789"')
check "token: /status on 10.99.0.1: $c_none without, $c_good with the token, $c_bad with a wrong one" \
    [ "$c_none/$c_good/$c_bad" = 401/200/401 ]

# A new token file: systemd copies credentials at start only, so `reload` cannot hand
# it over (systemd/systemd#21099; RefreshOnReload= in systemd/systemd#40093 is newer
# than Debian's systemd). The unit's comment says so; `restart` does it.
ctsh 'head -c 32 /dev/urandom | base64 >/etc/meshgate/token.new && chmod 600 /etc/meshgate/token.new && mv /etc/meshgate/token.new /etc/meshgate/token'
ct systemctl reload meshgate
if ctsh 'cmp -s /etc/meshgate/token /run/credentials/meshgate.service/token'; then
    note "this systemd refreshed the credential on reload"
else
    note "as documented: reload leaves the credential as it was at start (restart needed for a new token)"
fi
ct systemctl restart meshgate
c_new=$(code '-H "Authorization: Bearer $(cat /etc/meshgate/token)"')
check "token: after a new token file and systemctl restart, the new token is accepted ($c_new)" [ "$c_new" = 200 ]

# --- stop ------------------------------------------------------------------------------
mark=$(ct date +%s.%N)
ct systemctl stop meshgate
check "stop: systemctl stop meshgate returned 0" [ $? = 0 ]
stop_log=$(ct journalctl --since "@$mark" -o cat --no-pager |
    grep -E 'shutting down|meshgate.service: (Got notification message.*STOPPING=1|Main process exited|Deactivated)')
sed 's/^/      /' <<<"$stop_log"
check "stop: STOPPING=1 sent" grep -q 'STOPPING=1' <<<"$stop_log"
result=$(ct systemctl show -P Result meshgate)
status=$(ct systemctl show -P ExecMainStatus meshgate)
active=$(ct systemctl is-active meshgate)
check "stop: clean (Result=$result, exit status $status, $active)" \
    [ "$result/$status/$active" = success/0/inactive ]

# --- READY=1 waits for the mesh: activating until an address matches ----------------------
ct ip link del mg0
ctsh 'printf "bind = [\"cidr:10.99.0.0/24\"]\nport = 18789\n" >/etc/meshgate/meshgate.toml'
# Only the test adds --fallback fail --wait 20 (docs/serving.md suggests it for this).
ctsh 'mkdir -p /run/systemd/system/meshgate.service.d && printf "[Service]\nExecStart=\nExecStart=/usr/bin/meshgate serve --config /etc/meshgate/meshgate.toml --token-file %%d/token --log-format json --fallback fail --wait 20\n" >/run/systemd/system/meshgate.service.d/wait.conf && systemctl daemon-reload'
ct systemctl start --no-block meshgate
sleep 2
before="$(ct systemctl is-active meshgate)/$(ct systemctl show -P SubState meshgate)"
ctsh 'ip link add mg0 type veth peer name mg1 && ip addr add 10.99.0.1/24 dev mg0 && ip link set mg0 up && ip link set mg1 up'
after=
for _ in $(seq 1 100); do
    after=$(ct systemctl is-active meshgate)
    [ "$after" = active ] && break
    sleep 0.1
done
check "ready: $before while no address matches, $after once 10.99.0.1 appears" \
    [ "$before/$after" = activating/start/active ]
ct systemctl stop meshgate
ctsh 'rm -rf /run/systemd/system/meshgate.service.d && systemctl daemon-reload'

# --- the rating ------------------------------------------------------------------------------
ct systemd-analyze log-level info
score=$(ct systemd-analyze security meshgate --no-pager 2>/dev/null | grep 'Overall exposure level')
note "${score#→ }"
value=$(sed -n 's/.*: \([0-9.]*\) .*/\1/p' <<<"$score")
check "security: exposure ${value:-?} is OK (below 2.0)" awk -v v="${value:-99}" 'BEGIN { exit !(v < 2.0) }'
offline=$(systemd-analyze security --offline=true "$unit" --no-pager 2>/dev/null | grep 'Overall exposure level')
check "security: --offline on the shipped file agrees (${offline##*: })" [ "${offline##*: }" = "${score##*: }" ]

echo
if [ "$fails" = 0 ]; then echo "systemd-smoke: all checks passed"; else echo "systemd-smoke: $fails check(s) failed"; fi
exit "$fails"
