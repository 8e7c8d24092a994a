#!/usr/bin/env bash
# Build (or refresh) the project's environment in .venv: Debian's
# /usr/bin/python3 with system site packages, because rados and rbd come only
# from Debian's python3-rados/python3-rbd. Re-installs only when the
# requirements or packaging files changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${IMAGED_VENV:-.venv}
stamp_of() {
    cat requirements.txt test-requirements.txt bench-requirements.txt \
        setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1
}
if ! "$VENV/bin/python" -c 'import rados, rbd' 2>/dev/null; then
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
want=$(stamp_of)
if [ "$(cat "$VENV/.imaged-stamp" 2>/dev/null)" != "$want" ] || ! [ -x "$VENV/bin/imaged" ]; then
    echo "venv: installing imaged and its requirements into $VENV"
    log=$VENV/pip.log
    if ! { "$VENV/bin/pip" install --disable-pip-version-check -U pip &&
           "$VENV/bin/pip" install --disable-pip-version-check \
               -r requirements.txt -r test-requirements.txt \
               -r bench-requirements.txt -e . ; } >"$log" 2>&1; then
        tail -40 "$log"
        echo "venv: pip failed; full log in $log" >&2
        exit 1
    fi
    echo "$want" > "$VENV/.imaged-stamp"
fi
