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

"""Evidence for issue 29: a first disk from RBD import-only live migration.

``/usr/bin/python3 tools/repro/rbd_lazy_import.py PART [ARGS]`` against
the local stack (tools/stack.sh start; ``IMAGED_STACK_DIR``, default
/var/lib/imaged-stack), pool ``vms``, as the stack's admin. Every image it
makes is named ``lazyrepro-*`` and removed at the end (``cleanup`` removes
any left by a killed run). Sources are files under /tmp/lazyrepro, served
over HTTP by tools/repro/rangeserver.py (a child process whose faults this
script turns on and off). Prints one JSON object per measurement.

``formats``
    ``migration_prepare_import`` with a ``raw`` and a ``qcow`` spec over a
    ``file`` and an ``http`` stream: does it work, are the bytes right.
``api``
    Which librbd calls work on a migration target before ``execute`` and
    after ``commit`` (open, read, write, snapshot create/protect, clone
    from the snapshot, resize), and what the clone and the snapshot read
    (before and after the commit).
``timing [MIB...]`` (default 256 1024)
    Per size and stream: prepare, open, the first 4 KiB read, a snapshot,
    its protection and a clone of it (the first disk), reads of
    extents not yet copied (4 KiB and 4 MiB, random), ``execute`` with a
    4 KiB read every 100 ms beside it, commit, reads after the commit, the
    bytes the HTTP source sent; and, for comparison, a plain copy of the
    same bytes into a new image (what the download path does).
``answers``
    ``migration_prepare_import`` and a first read against a source that
    answers 401, 401 or 500 with ``Connection: close`` (Glance's answer to
    a request without a token), 405, 500, 200 to a Range request, or drops
    every connection: does it fail, hang or abort the process.
``qemu``
    ``qemu-io`` (QEMU's rbd driver, as a VM reads its disk) reads 4 KiB of
    a clone of the target's snapshot while the source answers well,
    stalls, drops connections, answers 500 or 401 with ``Connection:
    close``.
``orphan``
    A target with a protected snapshot and a clone loses its source: can
    the clone and the target be removed or aborted (clone first, or an
    abort first), and once the source answers again on the same port?
    (``cleanup`` repairs what is left.)
``copyup``
    What the source sends for a 4 KiB read, the same read again, a 4 KiB
    write, a read of the written object, and execute after them.
``deadline``
    The design's answer to a stalled upstream, a 500 after 2 s on a
    kept-alive connection (rangeserver's ``deadline:2000``): a read, a
    ``qemu-io`` read of a clone and ``migration_execute`` fail, how
    fast; then the source answers again: execute resumes, commit, bytes
    checked.
``abort_with_clone``
    The same abort of a target whose snapshot has a clone, with the
    source alive.
``faults [SECONDS [FAULT...]]`` (default 30; stall close error
status:401:close dead)
    The HTTP source stalls, drops the connection, answers 500, answers 401
    with ``Connection: close`` (as Glance does) or dies,
    while a read of a not-yet-copied extent waits, and while ``execute``
    runs: does the read return, after how long, with what; can the
    migration be aborted afterwards.
``crash [STAGE...]``
    A process is SIGKILLed during prepare (its source stalled), after
    prepare, during execute, after execute, after commit: what
    ``migration_status`` and an open say then, and whether a new process
    can finish (execute + commit, bytes checked) or abort it.
"""

import hashlib
import json
import os
import queue
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

STACK = os.environ.get('IMAGED_STACK_DIR', '/var/lib/imaged-stack')
CONF = os.path.join(STACK, 'ceph', 'ceph.conf')
KEYRING = os.path.join(STACK, 'ceph', 'ceph.client.admin.keyring')
POOL = 'vms'
WORK = '/tmp/lazyrepro'
PREFIX = 'lazyrepro-'
MIB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))


def out(**kw):
    print(json.dumps(kw, sort_keys=True), flush=True)


def connect():
    import rados
    cluster = rados.Rados(conffile=CONF, conf={'keyring': KEYRING})
    cluster.connect(timeout=30)
    return cluster, cluster.open_ioctx(POOL)


def make_source(mib):
    """A raw file of MIB MiB of incompressible, position-unique bytes."""
    os.makedirs(WORK, exist_ok=True)
    path = os.path.join(WORK, 'src%d.raw' % mib)
    if os.path.exists(path) and os.path.getsize(path) == mib * MIB:
        return path
    block = os.urandom(MIB)
    with open(path + '.tmp', 'wb') as f:
        for i in range(mib):
            f.write(i.to_bytes(8, 'little') + block[8:])
    os.rename(path + '.tmp', path)
    return path


def make_qcow2(raw):
    path = raw[:-4] + '.qcow2'
    if not os.path.exists(path):
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                        raw, path], check=True)
    return path


class Source:
    """rangeserver.py as a child process: its URL, faults and counters."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, 'rangeserver.py'), WORK],
            stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline().split()[1])

    def url(self, path):
        return 'http://127.0.0.1:%d/%s' % (self.port, os.path.basename(path))

    def mode(self, mode):
        urllib.request.urlopen('http://127.0.0.1:%d/_ctl/%s' % (
            self.port, mode), timeout=10).read()

    def stats(self):
        return json.loads(urllib.request.urlopen(
            self.url('_stats'), timeout=10).read())

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def spec(path, source=None, fmt='raw'):
    if source is None:
        stream = {'type': 'file', 'file_path': path}
    else:
        stream = {'type': 'http', 'url': source.url(path)}
    return json.dumps({'type': fmt, 'stream': stream})


def name(tag):
    return '%s%s-%d' % (PREFIX, tag, os.getpid())


def remove_all(ioctx, names):
    import rbd
    for n in names:
        for attempt in ('abort', 'remove'):
            try:
                if attempt == 'abort':
                    rbd.RBD().migration_abort(ioctx, n)
                else:
                    with rbd.Image(ioctx, n) as image:
                        for snap in list(image.list_snaps()):
                            if image.is_protected_snap(snap['name']):
                                image.unprotect_snap(snap['name'])
                            image.remove_snap(snap['name'])
                    rbd.RBD().remove(ioctx, n)
            except (rbd.ImageNotFound, rbd.InvalidArgument):
                pass
            except Exception as e:
                out(cleanup=n, step=attempt, error=repr(e))


def omap(ioctx, obj, key):
    import rados
    with rados.ReadOpCtx() as op:
        it, _ = ioctx.get_omap_vals_by_keys(op, (key,))
        ioctx.operate_read_op(op, obj)
        return dict(it).get(key)


def recorded_port(ioctx, n):
    """The port of the HTTP source in n's migration header, or None."""
    value = omap(ioctx, 'rbd_directory', 'name_' + n)
    if not value:
        return None
    header = 'rbd_header.' + value[4:].decode()
    spec_ = omap(ioctx, header, 'migration') or b''
    match = re.search(rb'http://127\.0\.0\.1:(\d+)/', spec_)
    return int(match.group(1)) if match else None


def cleanup(ioctx):
    """Remove our images; a target whose source is gone can be neither
    opened nor aborted (with snapshots): serve the source again on the
    port its header names, then remove."""
    import rbd
    mine = [n for n in rbd.RBD().list(ioctx) if n.startswith(PREFIX)]
    servers = []
    for n in mine:
        port = recorded_port(ioctx, n)
        if port:
            servers.append(subprocess.Popen(
                [sys.executable, os.path.join(HERE, 'rangeserver.py'), WORK,
                 str(port)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
            out(cleanup=n, serving_source_again_on=port)
    time.sleep(1 if servers else 0)
    # clones first
    mine.sort(key=lambda n: '-clone' not in n)
    try:
        remove_all(ioctx, mine)
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
    for n in [n for n in rbd.RBD().list(ioctx) if n in mine]:
        # stuck "being aborted" (EROFS on open, abort fails): by hand, what
        # abort would have done last: drop the migration header, then the
        # snapshots (the trashed ones too), then the image
        header = 'rbd_header.' + omap(ioctx, 'rbd_directory',
                                      'name_' + n)[4:].decode()
        ioctx.execute(header, 'rbd', 'migration_remove', b'')
        with rbd.Image(ioctx, n) as image:
            for snap in list(image.list_snaps()):
                if snap.get('namespace') == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH:
                    image.remove_snap_by_id(snap['id'])
        remove_all(ioctx, [n])
        out(cleanup=n, repaired_by_hand=n not in rbd.RBD().list(ioctx))
    for entry in rbd.RBD().trash_list(ioctx):
        if entry['name'].startswith(PREFIX):
            rbd.RBD().trash_remove(ioctx, entry['id'], force=True)
    left = [n for n in rbd.RBD().list(ioctx) if n.startswith(PREFIX)]
    out(cleanup='done', left=left)


def timed(fn, *args, **kw):
    t = time.monotonic()
    result = fn(*args, **kw)
    return result, time.monotonic() - t


def ms(seconds):
    return round(seconds * 1000, 1)


def summary(samples):
    if not samples:
        return {}
    s = sorted(samples)
    return {'n': len(s), 'p50_ms': ms(statistics.median(s)),
            'p95_ms': ms(s[int(0.95 * (len(s) - 1))]), 'max_ms': ms(s[-1])}


def loadavg():
    return os.getloadavg()[0]


# ------------------------------------------------------------------ formats


def part_formats(cluster, ioctx):
    import rbd
    raw = make_source(64)
    qcow = make_qcow2(raw)
    with open(raw, 'rb') as f:
        want = hashlib.sha256(f.read()).hexdigest()
    source = Source()
    made = []
    try:
        for fmt, path in (('raw', raw), ('qcow', qcow)):
            for stream in ('file', 'http'):
                n = name('fmt-%s-%s' % (fmt, stream))
                made.append(n)
                try:
                    _, t_prep = timed(
                        rbd.RBD().migration_prepare_import,
                        spec(path, source if stream == 'http' else None, fmt),
                        ioctx, n)
                except Exception as e:
                    out(part='formats', fmt=fmt, stream=stream,
                        prepare=repr(e))
                    continue
                with rbd.Image(ioctx, n) as image:
                    lazy = hashlib.sha256(image.read(0, image.size()))
                _, t_exec = timed(rbd.RBD().migration_execute, ioctx, n)
                rbd.RBD().migration_commit(ioctx, n)
                with rbd.Image(ioctx, n) as image:
                    done = hashlib.sha256(image.read(0, image.size()))
                out(part='formats', fmt=fmt, stream=stream,
                    prepare_ms=ms(t_prep), execute_ms=ms(t_exec),
                    lazy_read_right=lazy.hexdigest() == want,
                    committed_right=done.hexdigest() == want)
    finally:
        source.kill()
        remove_all(ioctx, made)


# ---------------------------------------------------------------------- api


def try_op(results, stage, op, fn, *args, **kw):
    try:
        value = fn(*args, **kw)
        results.setdefault(stage, {})[op] = 'ok'
        return value
    except Exception as e:
        results.setdefault(stage, {})[op] = repr(e)
        return None


def part_api(cluster, ioctx, stream='http'):
    import rbd
    raw = make_source(64)
    with open(raw, 'rb') as f:
        src = f.read()
    source = Source() if stream == 'http' else None
    target, clone1, clone2 = (name('api'), name('api-clone1'),
                              name('api-clone2'))
    res = {}
    try:
        rbd.RBD().migration_prepare_import(spec(raw, source), ioctx, target)
        res['status_prepared'] = rbd.RBD().migration_status(
            ioctx, target)['state']
        stage = 'prepared'
        image = try_op(res, stage, 'open', rbd.Image, ioctx, target)
        ro = try_op(res, stage, 'open_read_only', rbd.Image, ioctx, target,
                    read_only=True)
        if ro:
            ro.close()
        if image:
            data = try_op(res, stage, 'read', image.read, 20 * MIB, 4096)
            res['prepared_read_right'] = data == src[20 * MIB:20 * MIB + 4096]
            try_op(res, stage, 'write', image.write, b'W' * 4096, 30 * MIB)
            res['prepared_write_readback'] = (
                image.read(30 * MIB - 4096, 12288) ==
                src[30 * MIB - 4096:30 * MIB] + b'W' * 4096 +
                src[30 * MIB + 4096:30 * MIB + 8192])
            try_op(res, stage, 'snap_create', image.create_snap, 's1')
            try_op(res, stage, 'snap_protect', image.protect_snap, 's1')
            try_op(res, stage, 'clone', rbd.RBD().clone, ioctx, target, 's1',
                   ioctx, clone1, features=rbd.RBD_FEATURE_LAYERING)
            try:
                with rbd.Image(ioctx, clone1) as c:
                    res['prepared_clone_read_right'] = (
                        c.read(40 * MIB, 4096) ==
                        src[40 * MIB:40 * MIB + 4096])
                    res['prepared_clone_sees_write'] = (
                        c.read(30 * MIB, 4096) == b'W' * 4096)
            except Exception as e:
                res['prepared_clone_open'] = repr(e)
            try:
                with rbd.Image(ioctx, target, snapshot='s1') as s:
                    res['prepared_snap_read_right'] = (
                        s.read(50 * MIB, 4096) ==
                        src[50 * MIB:50 * MIB + 4096])
            except Exception as e:
                res['prepared_snap_open'] = repr(e)
            try_op(res, stage, 'resize_grow', image.resize, 80 * MIB)
            try_op(res, stage, 'resize_back', image.resize, 64 * MIB)
            sent = source.stats()['bytes'] if source else 0
            _, t = timed(try_op, res, stage, 'flatten', image.flatten)
            res['prepared_flatten_ms'] = ms(t)
            if source:  # flatten of a target copies from the source
                res['prepared_flatten_source_mib'] = round(
                    (source.stats()['bytes'] - sent) / MIB, 2)
            res['status_after_flatten'] = rbd.RBD().migration_status(
                ioctx, target)['state']
            image.close()
        try_op(res, stage, 'migration_execute', rbd.RBD().migration_execute,
               ioctx, target)
        res['status_executed'] = rbd.RBD().migration_status(
            ioctx, target)['state']
        try_op(res, 'executed', 'migration_commit',
               rbd.RBD().migration_commit, ioctx, target)
        try:
            res['status_committed'] = rbd.RBD().migration_status(
                ioctx, target)['state']
        except Exception as e:
            res['status_committed'] = repr(e)
        stage = 'committed'
        with rbd.Image(ioctx, target) as image:
            want = bytearray(src)
            want[30 * MIB:30 * MIB + 4096] = b'W' * 4096
            res['committed_head_right'] = image.read(0, 64 * MIB) == want
            try_op(res, stage, 'snap_create', image.create_snap, 's2')
            try_op(res, stage, 'snap_protect', image.protect_snap, 's2')
            try_op(res, stage, 'clone', rbd.RBD().clone, ioctx, target, 's2',
                   ioctx, clone2, features=rbd.RBD_FEATURE_LAYERING)
            try_op(res, stage, 'resize_grow', image.resize, 80 * MIB)
            image.resize(64 * MIB)
        try:
            with rbd.Image(ioctx, target, snapshot='s1') as s:
                res['committed_snap1_right'] = s.read(0, 64 * MIB) == want
        except Exception as e:
            res['committed_snap1'] = repr(e)
        for c in (clone1, clone2):
            try:
                with rbd.Image(ioctx, c) as image:
                    res['committed_%s_right' % c.split('-')[2]] = (
                        image.read(0, 64 * MIB) == want)
            except Exception as e:
                res['committed_%s' % c.split('-')[2]] = repr(e)
        out(part='api', stream=stream, **res)
    finally:
        if source:
            source.kill()
        remove_all(ioctx, [clone1, clone2, target])


# ------------------------------------------------------------------- timing


def read_samples(image, size, length, count, rnd):
    times = []
    for _ in range(count):
        off = rnd.randrange(0, size - length) // 4096 * 4096
        _, t = timed(image.read, off, length)
        times.append(t)
    return times


def part_timing(cluster, ioctx, sizes):
    import rbd
    for mib in sizes:
        raw = make_source(mib)
        for stream in ('http', 'file'):
            source = Source() if stream == 'http' else None
            n = name('t%d-%s' % (mib, stream))
            rnd = random.Random(mib)
            r = {'part': 'timing', 'mib': mib, 'stream': stream,
                 'load1_start': loadavg()}
            try:
                _, t = timed(rbd.RBD().migration_prepare_import,
                             spec(raw, source), ioctx, n)
                r['prepare_ms'] = ms(t)
                image, t = timed(rbd.Image, ioctx, n)
                r['open_ms'] = ms(t)
                _, t = timed(image.read, 0, 4096)
                r['first_read_4k_ms'] = ms(t)
                r['to_first_read_ms'] = ms(
                    sum(r[k] for k in ('prepare_ms', 'open_ms',
                                       'first_read_4k_ms')) / 1000)
                # the first disk as imaged makes it: the base's protected
                # snapshot and a clone of it, before execute
                disk = name('t%d-%s-disk' % (mib, stream))
                t0 = time.monotonic()
                image.create_snap('snap')
                image.protect_snap('snap')
                rbd.RBD().clone(ioctx, n, 'snap', ioctx, disk,
                                features=rbd.RBD_FEATURE_LAYERING)
                r['snap_protect_clone_ms'] = ms(time.monotonic() - t0)
                r['to_first_disk_ms'] = round(
                    r['prepare_ms'] + r['open_ms'] +
                    r['snap_protect_clone_ms'], 1)
                with rbd.Image(ioctx, disk) as d:
                    _, t = timed(d.read, 0, 4096)
                    r['disk_first_read_4k_ms'] = ms(t)
                r['uncopied_4k'] = summary(
                    read_samples(image, mib * MIB, 4096, 20, rnd))
                r['uncopied_4m'] = summary(
                    read_samples(image, mib * MIB, 4 * MIB, 5, rnd))
                before = source.stats()['bytes'] if source else 0
                during, stop = [], threading.Event()

                def sampler():
                    while not stop.is_set():
                        off = rnd.randrange(0, mib * MIB - 4096)
                        _, t = timed(image.read, off // 4096 * 4096, 4096)
                        during.append(t)
                        time.sleep(0.1)
                th = threading.Thread(target=sampler)
                th.start()
                _, t = timed(rbd.RBD().migration_execute, ioctx, n)
                stop.set()
                th.join()
                r['execute_ms'] = ms(t)
                r['execute_mib_s'] = round(mib / t, 1)
                r['during_execute_4k'] = summary(during)
                image.close()
                if source:
                    st = source.stats()
                    r['http_bytes_total_mib'] = round(st['bytes'] / MIB, 2)
                    r['http_bytes_execute_mib'] = round(
                        (st['bytes'] - before) / MIB, 2)
                    r['http_get'] = st['GET']
                    r['http_head'] = st['HEAD']
                _, t = timed(rbd.RBD().migration_commit, ioctx, n)
                r['commit_ms'] = ms(t)
                with rbd.Image(ioctx, n) as image:
                    r['committed_4k'] = summary(
                        read_samples(image, mib * MIB, 4096, 20, rnd))
                    r['committed_4m'] = summary(
                        read_samples(image, mib * MIB, 4 * MIB, 5, rnd))
                # what the download path does: every byte into a new image
                c = name('t%d-copy' % mib)
                rbd.RBD().create(ioctx, c, mib * MIB)
                t0 = time.monotonic()
                with rbd.Image(ioctx, c) as image, open(raw, 'rb') as f:
                    off = 0
                    while True:
                        chunk = f.read(4 * MIB)
                        if not chunk:
                            break
                        image.write(chunk, off)
                        off += len(chunk)
                    image.flush()
                r['plain_copy_ms'] = ms(time.monotonic() - t0)
                rbd.RBD().remove(ioctx, c)
                r['load1_end'] = loadavg()
                out(**r)
            finally:
                if source:
                    source.kill()
                remove_all(ioctx, [name('t%d-%s-disk' % (mib, stream)), n,
                                   name('t%d-copy' % mib)])


# ------------------------------------------------------------------- faults


def child_read(n, offset, wait):
    """In a child: open n, read 4 KiB at offset (aio), report when done."""
    import rbd
    _cluster, ioctx = connect()
    image = rbd.Image(ioctx, n)
    out(child='opened')
    sys.stdin.readline()  # the parent set the fault
    done = threading.Event()
    result = {}

    def cb(comp, data):
        result['r'] = comp.get_return_value()
        result['ok'] = data is not None
        done.set()
    t0 = time.monotonic()
    image.aio_read(offset, 4096, cb)
    if done.wait(wait):
        out(child='read', ms=ms(time.monotonic() - t0), **result)
    else:
        out(child='read', hung_s=wait)
        sys.stdin.readline()  # the parent lifted the fault
        t1 = time.monotonic()
        if done.wait(wait):
            out(child='read', after_lift_ms=ms(time.monotonic() - t1),
                **result)
        else:
            out(child='read', still_hung_after_lift_s=wait)
            os._exit(3)  # close() would wait for the read
    image.close()
    out(child='closed')


def child_execute(n):
    import rbd
    _cluster, ioctx = connect()

    def progress(offset, total):
        out(child='progress', pct=round(100.0 * offset / total))
        return 0
    t0 = time.monotonic()
    try:
        rbd.RBD().migration_execute(ioctx, n, on_progress=progress)
        out(child='execute', ms=ms(time.monotonic() - t0), result='ok')
    except Exception as e:
        out(child='execute', ms=ms(time.monotonic() - t0), result=repr(e))


def spawn(*args):
    proc = subprocess.Popen([sys.executable, __file__] + list(args),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    proc.lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            proc.lines.put(line)
        proc.lines.put('')
    threading.Thread(target=pump, daemon=True).start()
    return proc


def readline(proc, timeout):
    """The child's next JSON line; None at its end or after timeout s."""
    try:
        line = proc.lines.get(timeout=max(timeout, 0))
    except queue.Empty:
        return None
    return json.loads(line) if line else None


def part_faults(cluster, ioctx, wait=30.0, faults=None):
    import rbd
    faults = faults or ('stall', 'close', 'error', 'status:401:close',
                        'dead')
    raw = make_source(64)
    for fault in faults:
        # --- a read of a not-yet-copied extent while the source is faulty
        source = Source()
        n = name('fault-%s' % fault.replace(':', ''))
        r = {'part': 'faults', 'fault': fault, 'load1': loadavg()}
        try:
            rbd.RBD().migration_prepare_import(spec(raw, source), ioctx, n)
            child = spawn('_read', n, str(40 * MIB), str(wait))
            readline(child, 60)
            if fault == 'dead':
                source.kill()
            else:
                source.mode(fault)
            child.stdin.write('go\n')
            child.stdin.flush()
            line = readline(child, wait + 30)
            r['read'] = line
            if line is None:
                r['read'] = 'child gave no answer'
            if line and 'hung_s' in line:
                if fault != 'dead':
                    r['stalled_requests'] = source.stats()['stalled']
                    source.mode('ok')
                child.stdin.write('lift\n')
                child.stdin.flush()
                r['read_after_lift'] = readline(child, wait + 30)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                r['read_child'] = 'killed: exit hung'
            r['read_child_rc'] = child.returncode
            # --- open of the target with the source faulty
            if fault != 'dead':
                source.mode(fault)
            child = spawn('_open', n, str(wait))
            line = readline(child, wait + 30)
            r['open'] = line
            if child.poll() is None:
                child.kill()
            r['open_child_rc'] = child.wait()
            # --- execute with the fault turned on at about 30%
            if fault == 'dead':
                source = Source()
                rbd.RBD().migration_abort(ioctx, n)
                rbd.RBD().migration_prepare_import(spec(raw, source), ioctx,
                                                   n)
            source.mode('slow:100')
            child = spawn('_execute', n)
            t0 = time.monotonic()
            while True:
                line = readline(child, 60)
                if not line or line.get('pct', 100) >= 30 or \
                        line.get('child') == 'execute':
                    break
            if fault == 'dead':
                source.kill()
            else:
                source.mode(fault)
            line = None
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                line = readline(child, deadline - time.monotonic())
                if not line or line.get('child') == 'execute':
                    break
            if line and line.get('child') == 'execute':
                r['execute'] = line
            else:
                r['execute'] = 'no result %ds after the fault' % wait
                child.kill()
            child.wait()
            r['execute_total_s'] = round(time.monotonic() - t0, 1)
            # status and abort while the source is still faulty (a child:
            # they may hang), then in this process once it answers again
            child = spawn('_status_abort', n, str(wait))
            r['faulty_status'] = readline(child, wait + 30)
            r['faulty_abort'] = readline(child, wait + 30)
            if child.poll() is None:
                child.kill()
            r['status_abort_child_rc'] = child.wait()
            if fault == 'dead':
                source = Source()
            else:
                source.mode('ok')
            try:
                st, t = timed(rbd.RBD().migration_status, ioctx, n)
                r['status_after'] = st['state']
                r['status_ms'] = ms(t)
                _, t = timed(rbd.RBD().migration_abort, ioctx, n)
                r['abort_ms'] = ms(t)
            except Exception as e:
                r['status_or_abort'] = repr(e)
            r['left'] = [x for x in rbd.RBD().list(ioctx) if x == n]
            out(**r)
        finally:
            source.kill()
            remove_all(ioctx, [n])


def child_status_abort(n, wait):
    import rbd
    _cluster, ioctx = connect()
    for op, fn in (('status', rbd.RBD().migration_status),
                   ('abort', rbd.RBD().migration_abort)):
        box = {}

        def run():
            t0 = time.monotonic()
            try:
                value = fn(ioctx, n)
                box['result'] = value['state'] if op == 'status' else 'ok'
            except Exception as e:
                box['result'] = repr(e)
            box['ms'] = ms(time.monotonic() - t0)
        th = threading.Thread(target=run, daemon=True)
        th.start()
        th.join(wait)
        out(child=op, **(box or {'hung_s': wait}))
    os._exit(0)


def child_prepare(n, url, wait):
    import rbd
    _cluster, ioctx = connect()
    box = {}

    def run():
        t0 = time.monotonic()
        try:
            rbd.RBD().migration_prepare_import(url, ioctx, n)
            box['result'] = 'prepared'
            with rbd.Image(ioctx, n) as image:
                image.read(0, 4096)
            box['result'] = 'prepared, read ok'
        except Exception as e:
            box['result'] = box.get('result', '') + ' ' + repr(e)
        box['ms'] = ms(time.monotonic() - t0)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(wait)
    out(child='prepare', **(box or {'hung_s': wait}))
    os._exit(0)


def part_answers(cluster, ioctx, wait=20.0):
    """prepare (and a first read) against each kind of bad answer."""
    raw = make_source(64)
    for mode in ('status:401', 'status:401:close', 'status:500:close',
                 'status:405', 'error', 'norange', 'close'):
        source = Source()
        n = name('answer-%s' % mode.replace(':', ''))
        try:
            source.mode(mode)
            proc = subprocess.run(
                [sys.executable, __file__, '_prepare', n, spec(raw, source),
                 str(wait)], capture_output=True, text=True,
                timeout=wait + 60)
            st = source.stats()
            out(part='answers', answer=mode, rc=proc.returncode,
                child=proc.stdout.strip(), requests=st['HEAD'] + st['GET'],
                asserts=[line.strip()[:160] for line in
                         proc.stderr.splitlines() if 'FAILED' in line])
        finally:
            source.kill()
            remove_all(ioctx, [n])


def part_qemu(cluster, ioctx, wait=20.0):
    """qemu-io reads a clone of the target while the source misbehaves."""
    import rbd
    raw = make_source(64)
    for mode in ('ok', 'stall', 'close', 'error', 'status:401:close'):
        source = Source()
        n = name('qemu-%s' % mode.replace(':', ''))
        disk = name('qemu-%s-clone' % mode.replace(':', ''))
        try:
            rbd.RBD().migration_prepare_import(spec(raw, source), ioctx, n)
            with rbd.Image(ioctx, n) as image:
                image.create_snap('snap')
                image.protect_snap('snap')
            rbd.RBD().clone(ioctx, n, 'snap', ioctx, disk,
                            features=rbd.RBD_FEATURE_LAYERING)
            source.mode(mode)
            drive = 'rbd:%s/%s:id=admin:conf=%s:keyring=%s' % (
                POOL, disk, CONF, KEYRING)
            t0 = time.monotonic()
            try:
                proc = subprocess.run(
                    ['qemu-io', '-f', 'raw', '-c', 'read 40M 4k', drive],
                    capture_output=True, text=True, timeout=wait)
                result = dict(rc=proc.returncode, tail=(
                    proc.stdout + proc.stderr).strip().splitlines()[-2:])
            except subprocess.TimeoutExpired:
                result = dict(hung_s=wait)
            out(part='qemu', mode=mode, s=round(time.monotonic() - t0, 2),
                **result)
        finally:
            remove_all(ioctx, [disk, n])  # while the source answers
            source.kill()


def part_abort_with_clone(cluster, ioctx):
    """migration_abort of a target whose snapshot has a clone, the
    source alive."""
    import rbd
    raw = make_source(64)
    source = Source()
    n, disk = name('abortclone'), name('abortclone-clone')
    r = {'part': 'abort_with_clone'}
    try:
        rbd.RBD().migration_prepare_import(spec(raw, source), ioctx, n)
        with rbd.Image(ioctx, n) as image:
            image.create_snap('snap')
            image.protect_snap('snap')
        rbd.RBD().clone(ioctx, n, 'snap', ioctx, disk,
                        features=rbd.RBD_FEATURE_LAYERING)
        for label, fn in (
                ('abort_with_clone', lambda: rbd.RBD().migration_abort(
                    ioctx, n)),
                ('status_after', lambda: rbd.RBD().migration_status(
                    ioctx, n)['state']),
                ('open_clone_after', lambda: rbd.Image(ioctx, disk).read(
                    40 * MIB, 16)),
                ('remove_clone', lambda: rbd.RBD().remove(ioctx, disk)),
                ('abort_again', lambda: rbd.RBD().migration_abort(ioctx, n))):
            try:
                value = fn()
                r[label] = 'ok' if value is None else repr(value)[:60]
            except Exception as e:
                r[label] = repr(e)
        r['left'] = [x for x in rbd.RBD().list(ioctx) if x in (n, disk)]
        out(**r)
    finally:
        cleanup(ioctx)
        source.kill()


def part_deadline(cluster, ioctx, deadline_ms=2000):
    """The design's answer to a stalled upstream: a 500 after a deadline
    on a kept-alive connection. Read, qemu-io, execute; then resume."""
    import rbd
    raw = make_source(64)
    with open(raw, 'rb') as f:
        want = hashlib.sha256(f.read()).hexdigest()
    source = Source()
    n, disk = name('deadline'), name('deadline-clone')
    mode = 'deadline:%d' % deadline_ms
    r = {'part': 'deadline', 'deadline_ms': deadline_ms, 'load1': loadavg()}
    try:
        rbd.RBD().migration_prepare_import(spec(raw, source), ioctx, n)
        with rbd.Image(ioctx, n) as image:
            image.create_snap('snap')
            image.protect_snap('snap')
        rbd.RBD().clone(ioctx, n, 'snap', ioctx, disk,
                        features=rbd.RBD_FEATURE_LAYERING)
        child = spawn('_read', n, str(40 * MIB), '30')
        readline(child, 60)
        source.mode(mode)
        child.stdin.write('go\n')
        child.stdin.flush()
        r['read'] = readline(child, 60)
        child.kill()
        child.wait()
        drive = 'rbd:%s/%s:id=admin:conf=%s:keyring=%s' % (
            POOL, disk, CONF, KEYRING)
        t0 = time.monotonic()
        proc = subprocess.run(['qemu-io', '-f', 'raw', '-c', 'read 40M 4k',
                               drive], capture_output=True, text=True,
                              timeout=60)
        r['qemu_io'] = dict(rc=proc.returncode,
                            s=round(time.monotonic() - t0, 2),
                            tail=(proc.stdout + proc.stderr).strip()
                            .splitlines()[-1:])
        source.mode('slow:50')
        child = spawn('_execute', n)
        while True:
            line = readline(child, 60)
            if not line or line.get('pct', 100) >= 30 or \
                    line.get('child') == 'execute':
                break
        source.mode(mode)
        while line and line.get('child') != 'execute':
            line = readline(child, 60)
        r['execute'] = line
        child.wait()
        source.mode('ok')
        r['status_after'] = rbd.RBD().migration_status(ioctx, n)['state']
        _, t = timed(rbd.RBD().migration_execute, ioctx, n)
        r['execute_again_ms'] = ms(t)
        rbd.RBD().migration_commit(ioctx, n)
        with rbd.Image(ioctx, n) as image:
            r['committed_right'] = hashlib.sha256(
                image.read(0, image.size())).hexdigest() == want
        with rbd.Image(ioctx, disk) as image:
            r['clone_right'] = hashlib.sha256(
                image.read(0, image.size())).hexdigest() == want
        out(**r)
    finally:
        remove_all(ioctx, [disk, n])
        source.kill()


def part_copyup(cluster, ioctx):
    """What the source sends for reads, a write, and execute after them."""
    import rbd
    raw = make_source(64)
    source = Source()
    n = name('copyup')

    def sent():
        time.sleep(0.3)  # the server counts after it has sent
        return source.stats()['bytes']
    r = {'part': 'copyup'}
    try:
        rbd.RBD().migration_prepare_import(spec(raw, source), ioctx, n)
        with rbd.Image(ioctx, n) as image:
            b = sent()
            for label, fn in (
                    ('read_4k', lambda: image.read(40 * MIB, 4096)),
                    ('same_read_again', lambda: image.read(40 * MIB, 4096)),
                    ('write_4k', lambda: image.write(b'x' * 4096, 20 * MIB)),
                    ('read_4k_of_written_object',
                     lambda: image.read(20 * MIB + 8192, 4096))):
                fn()
                now = sent()
                r[label + '_source_bytes'] = now - b
                b = now
        rbd.RBD().migration_execute(ioctx, n)
        r['execute_source_mib'] = round((sent() - b) / MIB, 2)
        rbd.RBD().migration_commit(ioctx, n)
        out(**r)
    finally:
        remove_all(ioctx, [n])
        source.kill()


def part_orphan(cluster, ioctx, abort_first):
    """A base with a snapshot and a clone loses its source for good."""
    import rbd
    raw = make_source(64)
    source = Source()
    n, disk = name('orphan'), name('orphan-clone')
    r = {'part': 'orphan', 'abort_first': abort_first}

    def attempt(label, fn, *args):
        try:
            fn(*args)
            r[label] = 'ok'
        except Exception as e:
            r[label] = repr(e)
    try:
        rbd.RBD().migration_prepare_import(spec(raw, source), ioctx, n)
        with rbd.Image(ioctx, n) as image:
            image.create_snap('snap')
            image.protect_snap('snap')
        rbd.RBD().clone(ioctx, n, 'snap', ioctx, disk,
                        features=rbd.RBD_FEATURE_LAYERING)
        port = source.port
        source.kill()
        attempt('dead_open_clone', lambda: rbd.Image(ioctx, disk).close())
        if abort_first:
            attempt('dead_abort_target_with_clone',
                    rbd.RBD().migration_abort, ioctx, n)
        attempt('dead_remove_clone', rbd.RBD().remove, ioctx, disk)
        attempt('dead_abort_target', rbd.RBD().migration_abort, ioctx, n)
        attempt('dead_remove_target', rbd.RBD().remove, ioctx, n)
        try:
            r['dead_status'] = rbd.RBD().migration_status(ioctx, n)['state']
        except Exception as e:
            r['dead_status'] = repr(e)
        back = subprocess.Popen(
            [sys.executable, os.path.join(HERE, 'rangeserver.py'), WORK,
             str(port)], stdout=subprocess.PIPE, text=True)
        back.stdout.readline()
        try:
            attempt('back_remove_clone', rbd.RBD().remove, ioctx, disk)

            def unprotect_remove():
                with rbd.Image(ioctx, n) as image:
                    image.unprotect_snap('snap')
                    image.remove_snap('snap')
            attempt('back_unprotect_remove_snap', unprotect_remove)
            attempt('back_abort_target', rbd.RBD().migration_abort, ioctx,
                    n)
            r['left'] = [x for x in rbd.RBD().list(ioctx) if x in (n, disk)]
        finally:
            back.kill()
            back.wait()
        out(**r)
    finally:
        source.kill()


def child_open(n, wait):
    import rbd
    _cluster, ioctx = connect()
    box = {}

    def opener():
        t0 = time.monotonic()
        try:
            rbd.Image(ioctx, n).close()
            box['result'] = 'ok'
        except Exception as e:
            box['result'] = repr(e)
        box['ms'] = ms(time.monotonic() - t0)
    th = threading.Thread(target=opener, daemon=True)
    th.start()
    th.join(wait)
    out(child='open', **(box or {'hung_s': wait}))
    os._exit(0)


# -------------------------------------------------------------------- crash


def child_crash(n, stage, url):
    """Prepare (or not), go to stage, then SIGKILL ourselves."""
    import rbd
    _cluster, ioctx = connect()
    if stage == 'during_prepare':
        out(child='preparing')
        rbd.RBD().migration_prepare_import(url, ioctx, n)  # stalled
    elif stage != 'during_execute':
        rbd.RBD().migration_prepare_import(url, ioctx, n)
    if stage in ('after_execute', 'after_commit'):
        rbd.RBD().migration_execute(ioctx, n)
    if stage == 'after_commit':
        rbd.RBD().migration_commit(ioctx, n)
    if stage == 'during_execute':
        def progress(offset, total):
            out(child='progress', pct=round(100.0 * offset / total))
            return 0
        rbd.RBD().migration_execute(ioctx, n, on_progress=progress)
    out(child='at', stage=stage)
    os.kill(os.getpid(), signal.SIGKILL)


def part_crash(cluster, ioctx, stages=None):
    import rbd
    raw = make_source(64)
    with open(raw, 'rb') as f:
        want = hashlib.sha256(f.read()).hexdigest()
    for stage in stages or ('during_prepare', 'after_prepare',
                            'during_execute', 'after_execute',
                            'after_commit'):
        for recovery in ('finish', 'abort'):
            if stage == 'after_commit' and recovery == 'abort':
                continue
            source = Source()
            n = name('crash-%s-%s' % (stage, recovery))
            r = {'part': 'crash', 'stage': stage, 'recovery': recovery,
                 'load1': loadavg()}
            try:
                url = spec(raw, source)
                if stage == 'during_execute':
                    rbd.RBD().migration_prepare_import(url, ioctx, n)
                    source.mode('slow:50')
                if stage == 'during_prepare':
                    source.mode('stall')
                child = spawn('_crash', n, stage, url)
                while True:
                    line = readline(child, 60)
                    if stage == 'during_prepare' and line:
                        time.sleep(2)
                        break
                    if not line or line.get('child') == 'at' or \
                            line.get('pct', 0) >= 40:
                        break
                child.kill()
                child.wait()
                source.mode('ok')
                t_kill = time.monotonic()
                try:
                    st = rbd.RBD().migration_status(ioctx, n)
                    r['status'] = st['state']
                except Exception as e:
                    r['status'] = repr(e)
                r['listed'] = n in rbd.RBD().list(ioctx)
                try:
                    with rbd.Image(ioctx, n) as image:
                        h = hashlib.sha256(image.read(0, image.size()))
                        r['open_read_right'] = h.hexdigest() == want
                except Exception as e:
                    r['open_read'] = repr(e)
                try:
                    if recovery == 'abort':
                        # the dead client's watch lingers: abort refuses
                        # (EBUSY) until the OSD times it out
                        t0, tries = time.monotonic(), 0
                        while True:
                            tries += 1
                            try:
                                rbd.RBD().migration_abort(ioctx, n)
                                break
                            except rbd.ImageBusy:
                                if time.monotonic() - t0 > 120:
                                    raise
                                time.sleep(1)
                        r['abort_ms'] = ms(time.monotonic() - t0)
                        r['abort_tries'] = tries
                        r['listed_after'] = n in rbd.RBD().list(ioctx)
                    elif r.get('status') in (2, 3, 4):
                        if r['status'] != 4:
                            _, t = timed(rbd.RBD().migration_execute, ioctx,
                                         n)
                            r['execute_ms'] = ms(t)
                        _, t = timed(rbd.RBD().migration_commit, ioctx, n)
                        r['commit_ms'] = ms(t)
                    if recovery == 'finish' and r['listed']:
                        with rbd.Image(ioctx, n) as image:
                            h = hashlib.sha256(image.read(0, image.size()))
                            r['finished_right'] = h.hexdigest() == want
                except Exception as e:
                    r['recovery_error'] = repr(e)
                r['recovery_s_after_kill'] = round(
                    time.monotonic() - t_kill, 1)
                r['trash'] = [e['name'] for e in rbd.RBD().trash_list(ioctx)
                              if e['name'].startswith(PREFIX)]
                out(**r)
            finally:
                source.kill()
                remove_all(ioctx, [n])


def main(argv):
    part = argv[1] if len(argv) > 1 else 'formats'
    if part == '_read':
        return child_read(argv[2], int(argv[3]), float(argv[4]))
    if part == '_status_abort':
        return child_status_abort(argv[2], float(argv[3]))
    if part == '_prepare':
        return child_prepare(argv[2], argv[3], float(argv[4]))
    if part == '_open':
        return child_open(argv[2], float(argv[3]))
    if part == '_execute':
        return child_execute(argv[2])
    if part == '_crash':
        return child_crash(argv[2], argv[3], argv[4])
    cluster, ioctx = connect()
    out(ceph=subprocess.run(['ceph', '--version'], capture_output=True,
                            text=True).stdout.strip(), load1=loadavg())
    try:
        if part == 'formats':
            part_formats(cluster, ioctx)
        elif part == 'api':
            part_api(cluster, ioctx, 'http')
            part_api(cluster, ioctx, 'file')
        elif part == 'timing':
            part_timing(cluster, ioctx,
                        [int(a) for a in argv[2:]] or [256, 1024])
        elif part == 'copyup':
            part_copyup(cluster, ioctx)
        elif part == 'deadline':
            part_deadline(cluster, ioctx)
        elif part == 'abort_with_clone':
            part_abort_with_clone(cluster, ioctx)
        elif part == 'orphan':
            part_orphan(cluster, ioctx, False)
            cleanup(ioctx)
            part_orphan(cluster, ioctx, True)
            cleanup(ioctx)
        elif part == 'qemu':
            part_qemu(cluster, ioctx)
        elif part == 'answers':
            part_answers(cluster, ioctx)
        elif part == 'faults':
            part_faults(cluster, ioctx, float(argv[2]) if argv[2:] else 30.0,
                        argv[3:] or None)
        elif part == 'crash':
            part_crash(cluster, ioctx, argv[2:])
        elif part == 'cleanup':
            cleanup(ioctx)
        else:
            print(__doc__)
            return 2
    finally:
        ioctx.close()
        cluster.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
