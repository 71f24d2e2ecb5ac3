#!/usr/bin/env bash
# Build the fake device image for the docker runtime tests with `docker import`
# (no registry, no Dockerfile, no base image): static busybox + a shell device agent.
#
# Usage: devices_fake_image.sh DOCKER_HOST_URL [TAG]
#   e.g. devices_fake_image.sh unix:///tmp/dk1/docker.sock cloudphone/fake-device:test
#
# The agent speaks the line protocol of cloudphone.devices.links on $AGENT_PORT
# (one request per connection):
#   "CNXN? <nonce>"         -> "CNXN <serial> <nonce> device::ro.product.model=..;ro.build.version.sdk=..;"
#   "PING"                  -> "PONG"
#   "SETPROP <key> <value>" -> "OK"          (kept in /tmp/props/<key>)
#   "GETPROP <key>"         -> "PROP <key> <value>"
# and greets each client of $STREAM_PORT with "STREAM <serial> <display>".
# If $AGENT_PORT cannot be bound (taken), the container exits 1.
# Needs: busybox-static (/bin/busybox statically linked), tar, a docker CLI.
set -euo pipefail

HOST=${1:?usage: devices_fake_image.sh DOCKER_HOST_URL [TAG]}
TAG=${2:-cloudphone/fake-device:test}
BUSYBOX=${BUSYBOX:-/bin/busybox}
DOCKER_CLI=${DOCKER_CLI:-docker}

if command -v file >/dev/null; then file -L "$BUSYBOX" | grep -q "statically linked" \
        || { echo "$BUSYBOX is not a static binary (apt-get install busybox-static)" >&2; exit 1; }; fi

ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,agent,tmp,proc,sys,dev,etc}
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$ROOT/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"

cat >"$ROOT/agent/session.sh" <<'EOF'
#!/bin/sh
# One connection on the ADB port; stdin/stdout are the socket (busybox nc -e).
serial=${DEVICE_SERIAL:-fake-0}
case "${DEVICE_ANDROID_VERSION:-13}" in 11) sdk=30 ;; 12) sdk=32 ;; 14) sdk=34 ;; *) sdk=33 ;; esac
IFS= read -r line || true
line=$(printf '%s' "$line" | tr -d '\r')
set -- $line
case "${1:-}" in
"CNXN?")
    printf 'CNXN %s %s device::ro.product.model=fake;ro.build.version.sdk=%s;ro.serialno=%s;\n' \
        "$serial" "${2:--}" "$sdk" "$serial" ;;
PING)
    echo PONG ;;
SETPROP)
    case "${2:-}" in
    ''|ro.*|*[!a-z0-9._]*) echo "ERR bad property" ;;
    *) mkdir -p /tmp/props; printf '%s' "${3:-}" >"/tmp/props/$2"; echo OK ;;
    esac ;;
GETPROP)
    case "${2:-}" in
    ''|*[!a-z0-9._]*) echo "ERR bad property" ;;
    *) printf 'PROP %s %s\n' "$2" "$(cat "/tmp/props/$2" 2>/dev/null)" ;;
    esac ;;
*)
    echo "ERR unknown" ;;
esac
EOF

cat >"$ROOT/agent/stream.sh" <<'EOF'
#!/bin/sh
printf 'STREAM %s %s\n' "${DEVICE_SERIAL:-fake-0}" "$(cat /tmp/props/persist.cloudphone.display 2>/dev/null)"
EOF

cat >"$ROOT/agent/serve.sh" <<'EOF'
#!/bin/sh
# PID 1: traps TERM so `docker stop` is quick, and exits when the ADB listener dies
# (e.g. its port is taken on a host network), taking the stream listener with it.
: "${AGENT_PORT:?AGENT_PORT not set}"
STREAM_PORT=${STREAM_PORT:-5900}
trap 'kill "$ADB" "$STREAM" 2>/dev/null; exit 0' TERM INT
echo "fake device ${DEVICE_SERIAL:-fake-0} on :${AGENT_PORT} (stream :${STREAM_PORT})"
nc -ll -p "$AGENT_PORT" -e /agent/session.sh &
ADB=$!
nc -ll -p "$STREAM_PORT" -e /agent/stream.sh &
STREAM=$!
wait "$ADB"
kill "$STREAM" 2>/dev/null
exit 1
EOF
chmod 755 "$ROOT/agent/"*.sh

tar --numeric-owner --owner=0 --group=0 -C "$ROOT" -cf - . \
    | "$DOCKER_CLI" -H "$HOST" import \
        --change 'ENV PATH=/bin' \
        --change 'ENV AGENT_PORT=5555' \
        --change 'ENV STREAM_PORT=5900' \
        --change 'WORKDIR /' \
        --change 'CMD ["/agent/serve.sh"]' \
        --change 'LABEL cloudphone.fake=1' \
        - "$TAG" >/dev/null
"$DOCKER_CLI" -H "$HOST" image inspect "$TAG" --format '{{.Id}} {{.Size}}'
