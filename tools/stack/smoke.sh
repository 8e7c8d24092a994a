#!/bin/bash
# Smoke test of a running stack (tools/stack.sh start), as Keystone users:
# one small raw image into each Glance store as the demo user (glanceclient's
# chunked upload to "ceph", curl's plain upload to "local"); the records show
# no locations (Glance's secure defaults); imaged's service user reads them
# from GET /v2/images/{id}/locations; copy-image puts the "local" image into
# "ceph"; a download that must match and be counted in GLANCE_ACCESS_LOG; a
# clone images/<id>@snap -> vms as the imaged Ceph user.
# Cleans up after itself; exits non-zero on the first failure.
#
#   tools/stack/smoke.sh          (IMAGED_STACK_DIR selects the stack)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STACK_DIR=${IMAGED_STACK_DIR:-/var/lib/imaged-stack}
set -a
# shellcheck disable=SC1091
. "$STACK_DIR/stack.env"
set +a

tmp=$(mktemp -d)
ids=()
clone=
token() {  # token USER PASSWORD PROJECT
    /usr/bin/python3 "$HERE/probe.py" token --keystone "$OS_AUTH_URL" --user "$1" \
        --password "$2" --project "$3" --timeout 20
}
DEMO_TOKEN=$(token "$DEMO_USER" "$DEMO_PASSWORD" "$DEMO_PROJECT")
IMAGED_TOKEN=$(token "$IMAGED_USER" "$IMAGED_PASSWORD" "$IMAGED_PROJECT")
as_demo() { curl -sf --max-time 60 -H "X-Auth-Token: $DEMO_TOKEN" "$@"; }
as_imaged() { curl -sf --max-time 60 -H "X-Auth-Token: $IMAGED_TOKEN" "$@"; }
cleanup() {
    [ -z "$clone" ] || rbd -c "$CEPH_CONF" --id "$CEPH_IMAGED_USER" rm --no-progress "$clone" >/dev/null 2>&1 || true
    for id in "${ids[@]}"; do as_demo -o /dev/null -X DELETE "$GLANCE_URL/v2/images/$id" || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
field() { /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get(sys.argv[1]))' "$1"; }
# URL of the location in STORE, from a GET .../locations body
location() { /usr/bin/python3 -c '
import json, sys
print(" ".join(l["url"] for l in json.load(sys.stdin) if l["metadata"].get("store") == sys.argv[1]))' "$1"; }

create() {  # create NAME -> image id
    as_demo -X POST "$GLANCE_URL/v2/images" -H 'Content-Type: application/json' \
        -d "{\"name\": \"$1\", \"disk_format\": \"raw\", \"container_format\": \"bare\"}" | field id
}

qemu-img create -f raw "$tmp/img.raw" 32M >/dev/null
dd if=/dev/urandom of="$tmp/img.raw" bs=1M count=2 conv=notrunc status=none

# Keystone's catalog names Glance
/usr/bin/python3 - "$OS_AUTH_URL" "$DEMO_TOKEN" "$GLANCE_URL" <<'PY' || fail "Glance is not in Keystone's catalog"
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/auth/catalog", headers={"X-Auth-Token": sys.argv[2]})
cat = json.load(urllib.request.urlopen(req, timeout=20))["catalog"]
urls = {e["url"] for s in cat if s["type"] == "image" for e in s["endpoints"]}
sys.exit(0 if urls == {sys.argv[3]} else 1)
PY
echo "smoke: catalog ok: image -> $GLANCE_URL"

# ceph (the default store), chunked upload by glanceclient
C=$(create stack-smoke-ceph); ids+=("$C")
"$GLANCE_VENV/bin/glance" --os-image-url "$GLANCE_URL" --os-auth-token "$DEMO_TOKEN" \
    image-upload --file "$tmp/img.raw" "$C"
as_demo "$GLANCE_URL/v2/images/$C" >"$tmp/c.json"
[ "$(field status <"$tmp/c.json")" = active ] || fail "ceph image not active"
[ "$(field os_hash_algo <"$tmp/c.json")" = sha512 ] || fail "no sha512 hash"
if [ "$GLANCE_SHOW_LOCATIONS" = False ]; then
    [ "$(field direct_url <"$tmp/c.json")" = None ] || fail "the record shows direct_url"
    [ "$(field locations <"$tmp/c.json")" = None ] || fail "the record shows locations"
fi
url=$(as_imaged "$GLANCE_URL/v2/images/$C/locations" | location ceph) ||
    fail "imaged's user cannot read the locations"
[ "$url" = "rbd://$CEPH_FSID/$CEPH_IMAGES_POOL/$C/snap" ] || fail "ceph image location is $url"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Auth-Token: $DEMO_TOKEN" "$GLANCE_URL/v2/images/$C/locations")
[ "$code" = 403 ] || fail "the demo user reads the locations API (HTTP $code)"
echo "smoke: ceph upload ok (record shows locations: $GLANCE_SHOW_LOCATIONS): $url"

# local store, plain curl upload (Content-Length, Expect: 100-continue)
L=$(create stack-smoke-local); ids+=("$L")
t=$(as_demo -o /dev/null -w '%{time_total}' -X PUT -H 'Content-Type: application/octet-stream' \
    -H 'X-Image-Meta-Store: local' -T "$tmp/img.raw" "$GLANCE_URL/v2/images/$L/file")
url=$(as_imaged "$GLANCE_URL/v2/images/$L/locations" | location local)
case $url in file://*) ;; *) fail "local image location is $url" ;; esac
echo "smoke: local upload ok in ${t}s: $url"

# copy-image: the local image into the ceph store, as imaged
as_imaged -o /dev/null -X POST -H 'Content-Type: application/json' "$GLANCE_URL/v2/images/$L/import" \
    -d '{"method": {"name": "copy-image"}, "stores": ["ceph"]}' || fail "copy-image was refused"
for _ in $(seq 120); do
    stores=$(as_demo "$GLANCE_URL/v2/images/$L" | field stores)
    [ "$stores" != local,ceph ] || break
    sleep 0.5
done
[ "$stores" = local,ceph ] || fail "after copy-image the image is in stores $stores"
url=$(as_imaged "$GLANCE_URL/v2/images/$L/locations" | location ceph)
[ "$url" = "rbd://$CEPH_FSID/$CEPH_IMAGES_POOL/$L/snap" ] || fail "copied image location is $url"
echo "smoke: copy-image ok: $url"

# download: same bytes, logged once in the access log
as_demo -o "$tmp/down" "$GLANCE_URL/v2/images/$C/file"
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

# the imaged Ceph user: sees images, clones into vms
rbd -c "$CEPH_CONF" --id "$CEPH_IMAGED_USER" --keyring "$CEPH_IMAGED_KEYRING" ls "$CEPH_IMAGES_POOL" |
    grep -qx "$C" || fail "imaged user cannot list $CEPH_IMAGES_POOL"
clone=$CEPH_VMS_POOL/stack-smoke-$C
rbd -c "$CEPH_CONF" --id "$CEPH_IMAGED_USER" clone "$CEPH_IMAGES_POOL/$C@snap" "$clone"
rbd -c "$CEPH_CONF" --id "$CEPH_IMAGED_USER" info "$clone" | grep -q "parent: $CEPH_IMAGES_POOL/$C@snap" ||
    fail "clone has no parent"
echo "smoke: clone ok: $clone"
echo "smoke: OK"
