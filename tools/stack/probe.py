#!/usr/bin/python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Readiness probes for tools/stack.sh.

Run with Debian's /usr/bin/python3 (it has python3-rados); stdlib only
otherwise.  Every probe takes --timeout and polls until the service really
answers or the deadline passes; on timeout it prints what was still missing
and exits 1, so stack.sh never hangs.

  probe.py ceph --conf C [--mon] [--mgr] [--osd ID] [--pools a,b]
  probe.py amqp --host H --port P
  probe.py http --url U [--keystone AUTH_URL --user U --password P --project P]
  probe.py token --keystone AUTH_URL --user U --password P --project P
"""

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request


WATCH_PIDS = []


def _listening_ports(pid):
    """TCP ports the process listens on (from /proc: its sockets' inodes)."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[len("socket:["):-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def _is_active_mgr(mgr_dump, pid):
    """Is the mgr map's active mgr this process?

    A stopped mgr stays "available" for up to 30 s, so "available" alone
    does not say that the mgr just started is the active one.  Pacific's
    daemons use their pid as address nonce; Reef's a random one, so the
    active mgr's address is also matched against the ports the process
    listens on.
    """
    addrs = mgr_dump.get("active_addrs", {}).get("addrvec", [])
    if pid in {a.get("nonce") for a in addrs}:
        return True
    ports = {int(a["addr"].rsplit(":", 1)[1]) for a in addrs
             if a.get("addr", "").rsplit(":", 1)[-1].isdigit()}
    return bool(ports & _listening_ports(pid))


def _dead_pid():
    """First watched pid that is gone (or a zombie), else None."""
    for pid in WATCH_PIDS:
        try:
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return pid
        if state in ("Z", "X"):
            return pid
    return None


def _poll(timeout, interval, check):
    """Call check() until it returns None (ready) or the deadline passes.

    check() returns None when ready, else a string saying what is missing.
    Gives up at once when a --watch-pid process dies: the daemon we wait
    for is gone, waiting longer cannot help.
    """
    deadline = time.monotonic() + timeout
    why = "not checked"
    while True:
        dead = _dead_pid()
        if dead is not None:
            print("probe: process %d died (while waiting: %s)" % (dead, why),
                  file=sys.stderr)
            return False
        try:
            why = check()
        except Exception as exc:  # any failure just means "not yet"
            why = "%s: %s" % (type(exc).__name__, exc)
        if why is None:
            return True
        if time.monotonic() >= deadline:
            print("probe: timed out after %ss: %s" % (timeout, why),
                  file=sys.stderr)
            return False
        time.sleep(interval)


# --------------------------------------------------------------------- ceph
class CephProbe:
    """Checks against our cluster through librados as client.admin.

    librados is used (not the `ceph` CLI) because one process can do all the
    checks in ~0.1 s and every call gets a short timeout: a dead mon makes
    the CLI wait for client_mount_timeout (300 s by default).
    """

    OP_TIMEOUT = 5

    def __init__(self, conf):
        self.conf = conf
        self.cluster = None

    def _connect(self):
        import rados
        if self.cluster is not None:
            return self.cluster
        t = str(self.OP_TIMEOUT)
        c = rados.Rados(conffile=self.conf, name="client.admin",
                        conf={"client_mount_timeout": t,
                              "rados_mon_op_timeout": t,
                              "rados_osd_op_timeout": t,
                              "log_to_stderr": "false",
                              "err_to_stderr": "false"})
        try:
            c.connect(timeout=self.OP_TIMEOUT)
        except Exception:
            try:
                c.shutdown()
            except Exception:
                pass
            raise
        self.cluster = c
        return c

    def reset(self):
        if self.cluster is not None:
            try:
                self.cluster.shutdown()
            except Exception:
                pass
        self.cluster = None

    def _cmd(self, kind, cmd, target=None):
        c = self._connect()
        # (librados ignores this timeout; rados_*_op_timeout bound the call)
        timeout = self.OP_TIMEOUT
        cmd = dict(cmd, format="json")
        payload = json.dumps(cmd)
        if kind == "mon":
            ret, out, err = c.mon_command(payload, b"",
                                          timeout=timeout)
        elif kind == "mgr":
            ret, out, err = c.mgr_command(payload, b"", timeout=timeout)
        else:
            ret, out, err = c.osd_command(target, payload, b"",
                                          timeout=timeout)
        if ret != 0:
            raise RuntimeError("%s %r failed (%d): %s"
                               % (kind, cmd["prefix"], ret, err))
        return json.loads(out) if out else {}

    def check(self, mon, mgr, osd, pools, mgr_pid=None):
        try:
            return self._check(mon, mgr, osd, pools, mgr_pid)
        except Exception:
            # A failed call can leave the handle half-broken (e.g. the mon
            # restarted under us): start over with a fresh one next round.
            self.reset()
            raise

    def _check(self, mon, mgr, osd, pools, mgr_pid):
        # Connecting at all needs a mon in quorum and working cephx.
        st = self._cmd("mon", {"prefix": "quorum_status"})
        if not st.get("quorum_names"):
            return "mon has no quorum"
        if mgr:
            md = self._cmd("mon", {"prefix": "mgr dump"})
            if not md.get("available"):
                return "mgr not available yet"
            if mgr_pid and not _is_active_mgr(md, mgr_pid):
                return "mgr pid %d not active yet" % mgr_pid
        if osd is not None:
            # Ask the OSD itself: the osdmap may still say "up" for an OSD
            # that was kill -9'd until the mon notices, so only a reply from
            # the daemon proves it is there.
            s = self._cmd("osd", {"prefix": "status"}, target=osd)
            if s.get("state") != "active":
                return "osd.%s state %s" % (osd, s.get("state"))
            dump = self._cmd("mon", {"prefix": "osd dump"})
            for o in dump.get("osds", []):
                if o["osd"] == osd and not (o["up"] and o["in"]):
                    return "osd.%s not up+in in osdmap" % osd
        if pools:
            have = self._cmd("mon", {"prefix": "osd pool ls"})
            missing = [p for p in pools if p not in have]
            if missing:
                return "pools missing: %s" % ",".join(missing)
        if osd is not None:
            # All PGs active?  pg stat is served by the mgr, so only when we
            # wait for the mgr too: a stopped mgr stays "available" in the
            # mon's eyes for up to 30 s, and asking it blocks until the op
            # timeout.  Without it the data-path check below must do.
            ps = self._cmd("mgr", {"prefix": "pg stat"}) if mgr else {}
            bad = [s for s in ps.get("num_pg_by_state", [])
                   if "active" not in s["name"].split("+")]
            if bad:
                return "PGs not active: %s" % ", ".join(
                    "%d %s" % (s["num"], s["name"]) for s in bad)
            # And the data path really answers: one op per pool.
            c = self._connect()
            for p in pools:
                with c.open_ioctx(p) as io:
                    try:
                        io.stat("stack-probe")
                    except Exception as exc:
                        if type(exc).__name__ != "ObjectNotFound":
                            raise
        return None

    def health(self):
        try:
            h = self._cmd("mon", {"prefix": "health"})
            checks = ", ".join(sorted(h.get("checks", {})))
            return h.get("status", "?") + (" (%s)" % checks if checks else "")
        except Exception as exc:
            return "health unknown: %s" % exc


def cmd_ceph(a):
    p = CephProbe(a.conf)
    pools = [x for x in (a.pools or "").split(",") if x]
    ok = _poll(a.timeout, 0.2,
               lambda: p.check(a.mon, a.mgr or bool(a.mgr_pid), a.osd, pools,
                               a.mgr_pid))
    if ok and a.health:
        print(p.health())
    p.reset()
    return 0 if ok else 1


def cmd_missing_pools(a):
    """Print the pools (of --pools) that do not exist; exit 1 on error."""
    p = CephProbe(a.conf)
    have = p._cmd("mon", {"prefix": "osd pool ls"})
    print(" ".join(x for x in a.pools.split(",") if x and x not in have))
    p.reset()
    return 0


# --------------------------------------------------------------------- amqp
def amqp_check(host, port):
    """Send the AMQP 0-9-1 protocol header; a broker that has finished
    booting answers with a Connection.Start method frame (type 1, channel
    0, class 10 method 10)."""
    with socket.create_connection((host, port), timeout=2) as s:
        s.settimeout(2)
        s.sendall(b"AMQP\x00\x00\x09\x01")
        data = b""
        while len(data) < 11:
            chunk = s.recv(4096)
            if not chunk:
                return "connection closed before Connection.Start"
            data += chunk
        if data[0] == 1 and data[7:11] == b"\x00\x0a\x00\x0a":
            return None
        return "unexpected AMQP reply %r" % data[:16]


def cmd_amqp(a):
    ok = _poll(a.timeout, 0.2, lambda: amqp_check(a.host, a.port))
    return 0 if ok else 1


# ----------------------------------------------------------------- keystone
def get_token(auth_url, user, password, project, domain="Default"):
    """A project-scoped token (POST /v3/auth/tokens), or raises."""
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "password": password,
            "domain": {"name": domain}}}},
        "scope": {"project": {"name": project, "domain": {"name": domain}}},
    }}
    req = urllib.request.Request(
        auth_url.rstrip("/") + "/auth/tokens", method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()
        token = r.headers.get("X-Subject-Token")
        if r.status != 201 or not token:
            raise RuntimeError("Keystone answered %s without a token"
                               % r.status)
        return token


def _keystone_args(a):
    return (a.keystone, a.user, a.password, a.project)


def cmd_token(a):
    box = {}

    def check():
        box["token"] = get_token(*_keystone_args(a))
    ok = _poll(a.timeout, 0.2, check)
    if ok:
        print(box["token"])
    return 0 if ok else 1


# --------------------------------------------------------------------- http
def http_check(url, token=None):
    headers = {"X-Auth-Token": token} if token else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()
            return None if r.status == 200 else "HTTP %s" % r.status
    except urllib.error.HTTPError as e:
        return "HTTP %s" % e.code


def cmd_http(a):
    box = {}

    def check():
        if a.keystone and "token" not in box:
            box["token"] = get_token(*_keystone_args(a))
        why = http_check(a.url, box.get("token"))
        if why == "HTTP 401":
            # (a short-lived token may have expired meanwhile)
            box.pop("token", None)
        return why
    ok = _poll(a.timeout, 0.2, check)
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)

    c = sub.add_parser("ceph")
    c.add_argument("--conf", required=True)
    c.add_argument("--mon", action="store_true")
    c.add_argument("--mgr", action="store_true")
    c.add_argument("--mgr-pid", type=int,
                   help="like --mgr, and the active mgr must be this process")
    c.add_argument("--osd", type=int)
    c.add_argument("--pools")
    c.add_argument("--health", action="store_true")
    c.add_argument("--timeout", type=float, default=60)
    c.set_defaults(func=cmd_ceph)

    c = sub.add_parser("missing-pools")
    c.add_argument("--conf", required=True)
    c.add_argument("--pools", required=True)
    c.set_defaults(func=cmd_missing_pools)

    c = sub.add_parser("amqp")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=5672)
    c.add_argument("--timeout", type=float, default=60)
    c.set_defaults(func=cmd_amqp)

    c = sub.add_parser("http")
    c.add_argument("--url", required=True)
    c.add_argument("--timeout", type=float, default=60)
    c.set_defaults(func=cmd_http)
    c.add_argument("--keystone", help="send a token of this Keystone (v3 "
                   "URL) for --user/--password/--project")

    c = sub.add_parser("token")
    c.add_argument("--keystone", required=True, help="v3 auth URL")
    c.add_argument("--timeout", type=float, default=60)
    c.set_defaults(func=cmd_token)

    for p in (sub.choices["http"], sub.choices["token"]):
        p.add_argument("--user")
        p.add_argument("--password")
        p.add_argument("--project")

    for p in sub.choices.values():
        p.add_argument("--watch-pid", type=int, action="append", default=[],
                       help="fail at once if this process dies")
    a = ap.parse_args()
    WATCH_PIDS.extend(a.watch_pid)
    sys.exit(a.func(a))


if __name__ == "__main__":
    main()
