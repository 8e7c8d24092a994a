#!/bin/bash
# Smoke test of a running stack (tools/stack.sh start): one small raw image
# into each Glance store (glanceclient's chunked upload to "ceph", curl's
# plain upload to "local"), a download that must match and be counted in
# GLANCE_ACCESS_LOG, and a clone images/<id>@snap -> vms as the imaged user.
# Cleans up after itself; exits non-zero on the first failure.
#
#   tools/stack/smoke.sh          (IMAGED_STACK_DIR selects the stack)
set -euo pipefail
STACK_DIR=${IMAGED_STACK_DIR:-/var/lib/imaged-stack}
set -a
# shellcheck disable=SC1091
. "$STACK_DIR/stack.env"
set +a

tmp=$(mktemp -d)
ids=()
clone=
cleanup() {
    [ -z "$clone" ] || rbd -c "$CEPH_CONF" --id "$CEPH_IMAGED_USER" rm --no-progress "$clone" >/dev/null 2>&1 || true
    for id in "${ids[@]}"; do curl -s -o /dev/null -X DELETE "$GLANCE_URL/v2/images/$id" || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
field() { /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get(sys.argv[1]))' "$1"; }

create() {  # create NAME -> image id
    curl -sf -X POST "$GLANCE_URL/v2/images" -H 'Content-Type: application/json' \
        -d "{\"name\": \"$1\", \"disk_format\": \"raw\", \"container_format\": \"bare\"}" | field id
}

qemu-img create -f raw "$tmp/img.raw" 32M >/dev/null
dd if=/dev/urandom of="$tmp/img.raw" bs=1M count=2 conv=notrunc status=none

# ceph (the default store), chunked upload by glanceclient
C=$(create stack-smoke-ceph); ids+=("$C")
"$GLANCE_VENV/bin/glance" --os-image-url "$GLANCE_URL" --os-auth-token none \
    image-upload --file "$tmp/img.raw" "$C"
curl -sf "$GLANCE_URL/v2/images/$C" >"$tmp/c.json"
[ "$(field status <"$tmp/c.json")" = active ] || fail "ceph image not active"
url=$(field direct_url <"$tmp/c.json")
[ "$url" = "rbd://$CEPH_FSID/$CEPH_IMAGES_POOL/$C/snap" ] || fail "ceph image direct_url is $url"
[ "$(field os_hash_algo <"$tmp/c.json")" = sha512 ] || fail "no sha512 hash"
echo "smoke: ceph upload ok: $url"

# local store, plain curl upload (Content-Length, Expect: 100-continue)
L=$(create stack-smoke-local); ids+=("$L")
t=$(curl -sf -o /dev/null -w '%{time_total}' -X PUT -H 'Content-Type: application/octet-stream' \
    -H 'X-Image-Meta-Store: local' -T "$tmp/img.raw" "$GLANCE_URL/v2/images/$L/file")
url=$(curl -sf "$GLANCE_URL/v2/images/$L" | field direct_url)
case $url in file://*) ;; *) fail "local image direct_url is $url" ;; esac
echo "smoke: local upload ok in ${t}s: $url"

# download: same bytes, logged once in the access log
curl -sf -o "$tmp/down" "$GLANCE_URL/v2/images/$C/file"
cmp -s "$tmp/img.raw" "$tmp/down" || fail "downloaded data differs"
# (uWSGI writes the line once the response is done: the client can see the
# last byte a moment earlier)
for _ in $(seq 20); do
    n=$(grep -c "\"GET /v2/images/$C/file " "$GLANCE_ACCESS_LOG" || true)
    [ "$n" = 0 ] || break
    sleep 0.1
done
[ "$n" = 1 ] || fail "access log has $n downloads of $C, expected 1"
echo "smoke: download ok, counted in $GLANCE_ACCESS_LOG"

# the imaged user: sees images, clones into vms
rbd -c "$CEPH_CONF" --id "$CEPH_IMAGED_USER" --keyring "$CEPH_IMAGED_KEYRING" ls "$CEPH_IMAGES_POOL" |
    grep -qx "$C" || fail "imaged user cannot list $CEPH_IMAGES_POOL"
clone=$CEPH_VMS_POOL/stack-smoke-$C
rbd -c "$CEPH_CONF" --id "$CEPH_IMAGED_USER" clone "$CEPH_IMAGES_POOL/$C@snap" "$clone"
rbd -c "$CEPH_CONF" --id "$CEPH_IMAGED_USER" info "$clone" | grep -q "parent: $CEPH_IMAGES_POOL/$C@snap" ||
    fail "clone has no parent"
echo "smoke: clone ok: $clone"
echo "smoke: OK"
