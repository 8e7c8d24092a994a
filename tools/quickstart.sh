#!/usr/bin/env bash
# One command from a fresh Debian 12 machine (as root) to imaged serving RPC:
# installs what is needed, starts the local stack (Ceph, RabbitMQ, Keystone,
# Glance), starts imaged against it (Glance with its Keystone service user),
# uploads two small demo images as the stack's demo user and creates a root
# disk from each over RPC (one from the Ceph store, one by download), and
# prints what happened. Run again, it reuses what is up. Stop with tools/quickstart.sh stop.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STACK_DIR=${IMAGED_STACK_DIR:-/var/lib/imaged-stack}
QS=$STACK_DIR/quickstart
CONF_FILE=$QS/imaged.conf
PID_FILE=$QS/imaged.pid
LOG_FILE=$QS/imaged.log
HOST=${IMAGED_HOST:-quickstart}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}

say() { printf '\n== %s\n' "$*"; }

imaged_running() {
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "imaged --config-file $CONF_FILE"
}

stop_imaged() {
    if imaged_running; then
        local pid
        pid=$(cat "$PID_FILE")
        kill -TERM "$pid"
        for _ in $(seq 1 90); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -KILL "$pid" 2>/dev/null || true
        echo "imaged stopped"
    fi
    rm -f "$PID_FILE"
}

if [ "${1:-}" = stop ]; then
    stop_imaged
    tools/stack.sh stop
    exit 0
fi

say "Local stack: Ceph, RabbitMQ, Keystone, Glance (tools/stack.sh)"
# Everything but Barbican (signed images' key manager): its venv would add
# a minute and a half to a fresh machine's quick start.
tools/stack.sh start ceph rabbitmq keystone glance glance-file
say "Environment: .venv (tools/venv.sh)"
tools/venv.sh
# shellcheck disable=SC1091
. "$STACK_DIR/stack.env"

mkdir -p "$QS"
cat > "$CONF_FILE.new" <<CONF
[DEFAULT]
host = $HOST
transport_url = $TRANSPORT_URL
state_path = $QS/state
log_file = $LOG_FILE

[rbd]
ceph_conf = $CEPH_CONF
user = $CEPH_IMAGED_USER
keyring = $CEPH_IMAGED_KEYRING
pool = $CEPH_VMS_POOL

# imaged's Keystone service user; Glance from the catalog.
[glance]
auth_type = password
auth_url = $OS_AUTH_URL
username = $IMAGED_USER
password = $IMAGED_PASSWORD
project_name = $IMAGED_PROJECT
user_domain_name = $OS_USER_DOMAIN_NAME
project_domain_name = $OS_PROJECT_DOMAIN_NAME
region_name = $OS_REGION_NAME
CONF
if ! cmp -s "$CONF_FILE.new" "$CONF_FILE" 2>/dev/null; then
    mv "$CONF_FILE.new" "$CONF_FILE"
    stop_imaged  # the configuration changed: start afresh
else
    rm -f "$CONF_FILE.new"
fi

say "imaged (host $HOST, log $LOG_FILE)"
if imaged_running; then
    echo "already running, pid $(cat "$PID_FILE")"
else
    # Cores on, as the systemd unit has them (LimitCORE): a native crash
    # leaves one where kernel.core_pattern says (a plain name: in $QS), and
    # its Python stacks in $LOG_FILE.fault.<pid> and the log.
    (ulimit -c unlimited 2>/dev/null || true
     cd "$QS" && exec setsid "$ROOT/.venv/bin/imaged" --config-file "$CONF_FILE" \
        >>"$QS/imaged.stdout" 2>&1 < /dev/null) &
    echo $! > "$PID_FILE"
    echo "started, pid $!"
fi

client() { "$ROOT/.venv/bin/imaged-client" --config-file "$CONF_FILE" --host "$HOST" "$@"; }

for i in $(seq 1 60); do
    if caps=$(client capabilities 2>/dev/null); then break; fi
    imaged_running || { echo "imaged died; last log lines:"; tail -20 "$LOG_FILE"; exit 1; }
    [ "$i" -eq 60 ] && { echo "imaged did not answer in 60s"; tail -20 "$LOG_FILE"; exit 1; }
    sleep 1
done
say "imaged-client capabilities"
echo "$caps"

say "Demo images in Glance ($GLANCE_URL), as user $DEMO_USER"
# glanceclient as the stack's demo user (Glance from Keystone's catalog).
GLANCE_PY='
import os
from glanceclient import client
from keystoneauth1.identity import v3
from keystoneauth1 import session
e = os.environ
auth = v3.Password(auth_url=e["OS_AUTH_URL"], username=e["DEMO_USER"],
                   password=e["DEMO_PASSWORD"], project_name=e["DEMO_PROJECT"],
                   user_domain_name=e["OS_USER_DOMAIN_NAME"],
                   project_domain_name=e["OS_PROJECT_DOMAIN_NAME"])
c = client.Client("2", session=session.Session(auth=auth, timeout=60),
                  region_name=e["OS_REGION_NAME"])
'
demo_image() {  # name backend disk_format file
    local id
    id=$(cat "$QS/$1.id" 2>/dev/null || true)
    if [ -n "$id" ] && "$ROOT/.venv/bin/python" - "$id" <<PY 2>/dev/null
$GLANCE_PY
import sys
sys.exit(0 if c.images.get(sys.argv[1])['status'] == 'active' else 1)
PY
    then echo "$1: $id (reused)"; return; fi
    id=$("$ROOT/.venv/bin/python" - "$@" <<PY
$GLANCE_PY
import sys
name, backend, disk_format, path = sys.argv[1:5]
image = c.images.create(name=name, disk_format=disk_format,
                        container_format='bare')
with open(path, 'rb') as f:
    c.images.upload(image['id'], f, backend=backend)
print(image['id'])
PY
)
    echo "$id" > "$QS/$1.id"
    echo "$1: $id (uploaded to the $2 store)"
}
export OS_AUTH_URL DEMO_USER DEMO_PASSWORD DEMO_PROJECT OS_USER_DOMAIN_NAME \
    OS_PROJECT_DOMAIN_NAME OS_REGION_NAME
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 16M /dev/urandom > "$work/demo.raw"
qemu-img convert -f raw -O qcow2 "$work/demo.raw" "$work/demo.qcow2"
demo_image imaged-demo-raw ceph raw "$work/demo.raw"
demo_image imaged-demo-qcow2 local qcow2 "$work/demo.qcow2"

# imaged believes Keystone, not the message: a call carries its caller's
# token ($OS_AUTH_TOKEN for imaged-client). The disks are the demo user's;
# the cache's list is an operator's (here imaged's own service user's).
token_of() {  # user password project
    "$ROOT/.venv/bin/python" - "$@" <<'PY'
import os, sys
from keystoneauth1.identity import v3
from keystoneauth1 import session
e = os.environ
auth = v3.Password(auth_url=e["OS_AUTH_URL"], username=sys.argv[1],
                   password=sys.argv[2], project_name=sys.argv[3],
                   user_domain_name=e["OS_USER_DOMAIN_NAME"],
                   project_domain_name=e["OS_PROJECT_DOMAIN_NAME"])
print(session.Session(auth=auth, timeout=60).get_token())
PY
}

say "create-root-disk over RPC, as user $DEMO_USER"
demo_token=$(token_of "$DEMO_USER" "$DEMO_PASSWORD" "$DEMO_PROJECT")
for demo in raw qcow2; do
    uuid_file=$QS/demo-$demo.instance
    [ -s "$uuid_file" ] || cat /proc/sys/kernel/random/uuid > "$uuid_file"
    echo "--- from imaged-demo-$demo ($( [ $demo = raw ] && echo 'Ceph store' || echo 'file store: download'))"
    OS_AUTH_TOKEN=$demo_token client create-root-disk "$(cat "$uuid_file")" "$(cat "$QS/imaged-demo-$demo.id")" 1
done

say "imaged-client list-cached, as service user $IMAGED_USER"
OS_AUTH_TOKEN=$(token_of "$IMAGED_USER" "$IMAGED_PASSWORD" "$IMAGED_PROJECT") client list-cached

cat <<EOF

imaged is serving RPC as host "$HOST" (config $CONF_FILE, log $LOG_FILE).
Try:  .venv/bin/imaged-client --config-file $CONF_FILE --host $HOST capabilities
Stop: tools/quickstart.sh stop
EOF
