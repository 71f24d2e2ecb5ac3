#!/usr/bin/env bash
# Start a private, isolated dockerd whose whole state lives under STATE_DIR.
#
# Used by tests/support/devices_docker.py (the private dockerd fixture).
# Usage:
#   devices_dockerd.sh STATE_DIR [SOCKET_PATH] [TIMEOUT_SECONDS]
#   devices_dockerd.sh --stop STATE_DIR [TIMEOUT_SECONDS]
#
# Start: prints the dockerd pid on stdout (only that), writes STATE_DIR/dockerd.pid,
#        log goes to STATE_DIR/dockerd.log. Exit != 0 if not ready before the deadline
#        (the half-started dockerd is killed in that case).
# Stop:  SIGTERM the pid from STATE_DIR/dockerd.pid, wait for it (SIGKILL after the
#        deadline), then kill what a crashed daemon leaves running (shims, container
#        processes), unmount leftovers under STATE_DIR and rmdir its cgroups.
#        After --stop, `rm -rf STATE_DIR` works.
#
# Needs: root (real uid 0; dockerd refuses otherwise), packages docker.io (dockerd,
# containerd, runc) and a docker CLI. No docker0 bridge, no iptables: containers
# must use --network host (or none).
set -euo pipefail

die() { echo "devices_dockerd.sh: $*" >&2; exit 1; }

DOCKER_CLI=${DOCKER_CLI:-docker}

# Per-state-dir name for the containerd namespace and the cgroup parent.
ns_for() { echo "cloudphone-$(printf '%s' "$1" | md5sum | cut -c1-8)"; }

stop_dockerd() {
    local state=$1 timeout=${2:-20}
    state=$(realpath -m "$state")
    local pidfile="$state/dockerd.pid"
    [[ -f $pidfile ]] || { echo "no pidfile $pidfile (not running?)" >&2; return 0; }
    local pid; pid=$(<"$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        local deadline=$((SECONDS + timeout))
        while kill -0 "$pid" 2>/dev/null; do
            if (( SECONDS >= deadline )); then
                echo "dockerd $pid did not exit in ${timeout}s, SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.5
                break
            fi
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
    # After a SIGKILL (ours above, or a crash) containerd dies with dockerd but the
    # per-container shims and the container processes keep running. Kill exactly
    # those that belong to this state dir: container processes via the cgroup parent
    # /$NS that this daemon was started with, shims via their -address under our exec-root.
    local ns cg p
    ns=$(ns_for "$state")
    for cg in /sys/fs/cgroup/*/"$ns"/*/cgroup.procs /sys/fs/cgroup/"$ns"/*/cgroup.procs; do
        [[ -f $cg ]] || continue
        while read -r p; do kill -KILL "$p" 2>/dev/null || true; done <"$cg"
    done
    for p in /proc/[0-9]*; do
        if tr "\\0" " " 2>/dev/null <"$p/cmdline" | grep -q "containerd-shim.* -address $state/exec/containerd/"; then
            kill -KILL "${p#/proc/}" 2>/dev/null || true
        fi
    done
    # Leftover mounts (exec-root netns files, container shm, overlay mounts) after an
    # unclean stop: unmount deepest first so the directory can be removed.
    local m
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v p="$state/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    # Empty per-container cgroup dirs are left behind by a crash: rmdir them.
    sleep 0.2
    find /sys/fs/cgroup -depth -type d -path "*/$ns*" -exec rmdir {} + 2>/dev/null || true
    echo "stopped dockerd $pid" >&2
}

if [[ ${1:-} == --stop ]]; then
    [[ $# -ge 2 ]] || die "usage: $0 --stop STATE_DIR [TIMEOUT]"
    stop_dockerd "$2" "${3:-20}"
    exit 0
fi

[[ $# -ge 1 ]] || die "usage: $0 STATE_DIR [SOCKET_PATH] [TIMEOUT_SECONDS]"
[[ $(id -u) -eq 0 ]] || die "dockerd must run as root (rootless mode needs rootlesskit, not set up here)"
command -v dockerd >/dev/null || die "dockerd not found: apt-get install -y --no-install-recommends docker.io"

STATE=$(realpath -m "$1")
SOCK=$(realpath -m "${2:-$STATE/docker.sock}")
TIMEOUT=${3:-30}

# Keep the exec-root path short: containerd's sockets live under it and unix socket
# paths are limited to 107 bytes (…/exec/containerd/containerd.sock.ttrpc).
EXEC="$STATE/exec"
(( ${#EXEC} + 40 < 107 )) || die "STATE_DIR path too long for unix sockets: $STATE"

mkdir -p "$STATE/data" "$EXEC" "$(dirname "$SOCK")"
# Own (empty) config: never pick up a host /etc/docker/daemon.json ("hosts" in it
# conflicts with -H and dockerd refuses to start).
[[ -f $STATE/daemon.json ]] || echo '{}' >"$STATE/daemon.json"
if [[ -f $STATE/dockerd.pid ]] && kill -0 "$(<"$STATE/dockerd.pid")" 2>/dev/null; then
    die "dockerd already running with pid $(<"$STATE/dockerd.pid") for $STATE"
fi
rm -f "$SOCK"
# dockerd 20.10 silently uses a *system* containerd if /run/containerd/containerd.sock
# exists (instead of its own supervised one under the exec-root). Then all private
# daemons share it; a unique namespace at least keeps their containers apart.
NS=$(ns_for "$STATE")
[[ -S /run/containerd/containerd.sock ]] \
    && echo "warning: system containerd found; dockerd will use it (namespace $NS)" >&2

# setsid: own session/process group, so the caller's Ctrl-C / job control does not
# hit it and it is not tied to our shell. --pidfile must be private, otherwise it
# collides with /var/run/docker.pid of any other dockerd on the host.
setsid dockerd \
    --data-root "$STATE/data" \
    --exec-root "$EXEC" \
    --pidfile "$STATE/dockerd.pid.daemon" \
    -H "unix://$SOCK" \
    --bridge=none \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --userland-proxy=false \
    --storage-driver=overlay2 \
    --log-level=warn \
    --shutdown-timeout=2 \
    --containerd-namespace="$NS" --containerd-plugins-namespace="$NS-plugins" \
    --cgroup-parent="/$NS" \
    --config-file="$STATE/daemon.json" \
    >"$STATE/dockerd.log" 2>&1 </dev/null &
PID=$!
echo "$PID" >"$STATE/dockerd.pid"

deadline=$(( $(date +%s%N) + TIMEOUT * 1000000000 ))
while :; do
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "dockerd exited early; last log lines:" >&2
        tail -n 20 "$STATE/dockerd.log" >&2
        rm -f "$STATE/dockerd.pid"
        exit 1
    fi
    if [[ -S $SOCK ]] && "$DOCKER_CLI" -H "unix://$SOCK" info --format '{{.ServerVersion}}' >/dev/null 2>&1; then
        break
    fi
    if (( $(date +%s%N) >= deadline )); then
        echo "dockerd not ready after ${TIMEOUT}s; killing it. Last log lines:" >&2
        tail -n 20 "$STATE/dockerd.log" >&2
        stop_dockerd "$STATE" 10
        exit 1
    fi
    sleep 0.05
done
echo "$PID"
