"""Benchmarks of imaged against the local stack (``tools/stack.sh start``).

Starts its own imaged daemon and calls it only over RPC, as a scheduler
would, and measures each figure beside a baseline taken in the same run (the
same work done directly with librbd, glanceclient, the ``rbd`` CLI or
oslo.messaging): absolute times drift on a shared machine, ratios hold.
Every figure is the median of ``--repetitions`` samples; a sample that fails
is retried once, and the retry is reported.

    .venv/bin/python -m tools.bench            # full: about 15 minutes
    .venv/bin/python -m tools.bench --quick    # tiny sizes, under a minute

Prints a table, writes the raw figures as JSON (``--json``) and a plot of
time against image size (``--plot``). Exits 0 whenever it measured, whether
or not the targets were met; 1 when imaged or a baseline failed twice.
Everything it creates (Glance images, RBD images, its daemon and state) is
removed at the end, also on failure or SIGTERM.
"""

import argparse
from concurrent import futures
import contextlib
import dataclasses
import datetime
import glob
import io
import json
import math
import operator
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

if __package__ in (None, ''):  # run as a script: find the repository
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))

import imaged.cmd  # noqa: E402,F401  (selects oslo.service's backend first)

import oslo_messaging as messaging  # noqa: E402
import requests  # noqa: E402

from imaged import context  # noqa: E402
from imaged import rpc  # noqa: E402
from imaged import rpcapi  # noqa: E402
from tests.functional import base  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ('rpc', 'clone', 'download', 'sparse', 'qcow2', 'dedup',
            'memory')
STARTED = time.monotonic()


@dataclasses.dataclass
class Config:
    repetitions: int
    clone_sizes: tuple
    download_sizes: tuple
    sparse: tuple            # (virtual size, bytes of data)
    qcow2: tuple             # (virtual size, bytes of data)
    dedup_calls: int
    dedup_size: int
    rpc_calls: int
    memory_sizes: tuple
    call_timeout: int        # seconds a create_root_disk call may take


FULL = Config(repetitions=3, clone_sizes=(64 * MiB, GiB, 4 * GiB),
              download_sizes=(256 * MiB, GiB), sparse=(4 * GiB, 256 * MiB),
              qcow2=(GiB, 256 * MiB), dedup_calls=16, dedup_size=256 * MiB,
              rpc_calls=200, memory_sizes=(GiB, 4 * GiB), call_timeout=900)
QUICK = Config(repetitions=1, clone_sizes=(4 * MiB, 32 * MiB),
               download_sizes=(8 * MiB, 32 * MiB), sparse=(64 * MiB, 8 * MiB),
               qcow2=(32 * MiB, 8 * MiB), dedup_calls=16, dedup_size=8 * MiB,
               rpc_calls=50, memory_sizes=(8 * MiB, 32 * MiB),
               call_timeout=120)


def size_text(n):
    if n >= GiB and n % GiB == 0:
        return '%d GiB' % (n // GiB)
    return '%d MiB' % (n // MiB)


def disk_gb(size):
    return max(1, math.ceil(size / GiB))


def log(msg, *args):
    print('[%6.1fs] %s' % (time.monotonic() - STARTED, msg % args),
          file=sys.stderr, flush=True)


def describe(error):
    lines = str(error).strip().splitlines()
    return '%s: %s' % (type(error).__name__, lines[0] if lines else '')


def alternate(rep, *runs):
    """Call ``runs`` in turn, in reverse order on odd repetitions."""
    for run in (runs if rep % 2 == 0 else runs[::-1]):
        run()


# -- image data ---------------------------------------------------------------

class ImageData(io.RawIOBase):
    """Image bytes made as they are read: nothing is held but one MiB.

    ``data_mib`` says which MiB hold data (all by default); the others read
    as zeros. Every data MiB is one random MiB stamped with its index, so no
    block is all zeros and no two are alike: skipping zeros cannot cheat.
    """

    _random = os.urandom(MiB)

    def __init__(self, size, data_mib=None):
        self.size = size
        self.data_mib = data_mib
        self.pos = 0
        self._index, self._mib = None, None

    @classmethod
    def spread(cls, size, data, extents=16):
        """``data`` bytes in ``extents`` even runs across ``size``."""
        extents = min(extents, data // MiB)
        run, step = data // MiB // extents, size // MiB // extents
        return cls(size, {e * step + i for e in range(extents)
                          for i in range(run)})

    def mib(self, index):
        if self.data_mib is not None and index not in self.data_mib:
            return None
        return struct.pack('<Q', index) + self._random[8:]

    def readable(self):
        return True

    def readinto(self, buf):
        index, offset = divmod(self.pos, MiB)
        n = min(len(buf), self.size - self.pos, MiB - offset)
        if n <= 0:
            return 0
        if index != self._index:
            self._index, self._mib = index, self.mib(index)
        buf[:n] = (self._mib[offset:offset + n] if self._mib is not None
                   else bytes(n))
        self.pos += n
        return n

    def write_sparse(self, path):
        with open(path, 'wb') as f:
            for index in range(self.size // MiB):
                block = self.mib(index)
                if block is not None:
                    os.pwrite(f.fileno(), block, index * MiB)
            f.truncate(self.size)


class ImageFile(io.FileIO):
    """A file to upload, opened anew for each attempt."""

    def __init__(self, path):
        super().__init__(path, 'rb')
        self.size = os.path.getsize(path)


# -- the machine and processes ------------------------------------------------

def machine_facts():
    facts = {'nproc': len(os.sched_getaffinity(0)), 'cpu_model': None,
             'mem_total_bytes': None, 'kernel': os.uname().release}
    with open('/proc/cpuinfo') as f:
        facts['cpu_model'] = next((line.split(':', 1)[1].strip()
                                   for line in f
                                   if line.startswith('model name')), None)
    with open('/proc/meminfo') as f:
        facts['mem_total_bytes'] = next(int(line.split()[1]) * 1024
                                        for line in f
                                        if line.startswith('MemTotal:'))
    return facts


def source_facts(tree):
    def git(*args):
        return subprocess.run(['git', '-C', tree] + list(args),
                              capture_output=True, text=True).stdout.strip()
    return {'tree': tree, 'commit': git('rev-parse', '--short', 'HEAD'),
            'uncommitted': bool(git('status', '--porcelain', '--',
                                    'imaged'))}


def proc_status_bytes(pid, key):
    """A ``kB`` field of /proc/PID/status, in bytes (None if gone)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss(pid):
    """Start VmHWM afresh from the current RSS (Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        with open('/proc/%d/clear_refs' % pid, 'w') as f:
            f.write('5')


def children(pid):
    kids = []
    with contextlib.suppress(OSError):
        for task in os.listdir('/proc/%d/task' % pid):
            with open('/proc/%d/task/%s/children' % (pid, task)) as f:
                kids += [int(p) for p in f.read().split()]
    return kids


def stack_services(stack_dir):
    """``{pid file: (pid, start time)}`` of the stack's services: changes
    when the fault-injection suite (or anyone) restarts one of them."""
    services = {}
    for pattern in ('ceph/run/*.pid', 'glance/run/*.pid', 'rabbitmq/*.pid'):
        for path in glob.glob(os.path.join(stack_dir, pattern)):
            try:
                with open(path) as f:
                    pid = int(f.read().strip())
                with open('/proc/%d/stat' % pid) as f:
                    services[path] = (pid, f.read().rsplit(')', 1)[1]
                                      .split()[19])
            except (OSError, ValueError):
                services[path] = None
    return services


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


# -- the stack ----------------------------------------------------------------

class AdminCeph:
    """The baselines' librbd and ``rbd`` CLI work, and cleanup, as admin."""

    def __init__(self, stack):
        import rados
        import rbd
        self.rados, self.rbd = rados, rbd
        self.conf_file = stack['CEPH_CONF']
        self.keyring = stack['CEPH_ADMIN_KEYRING']
        self.vms = stack['CEPH_VMS_POOL']
        self.images = stack['CEPH_IMAGES_POOL']
        self.cluster = None

    def connect(self):
        if self.cluster is None:
            cluster = self.rados.Rados(
                conffile=self.conf_file,
                conf={'keyring': self.keyring, 'client_mount_timeout': '15',
                      'rados_mon_op_timeout': '30',
                      'rados_osd_op_timeout': '60'})
            cluster.connect(timeout=15)
            self.cluster = cluster
        return self.cluster

    def close(self):
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.shutdown()

    def problems(self):
        try:
            if not self.connect().pool_exists(self.vms):
                return ['Ceph pool %s is missing' % self.vms]
            return []
        except Exception as e:
            self.close()  # the next use connects afresh
            return ['Ceph: %s' % describe(e)]

    def ioctx(self, pool):
        return self.connect().open_ioctx(pool)

    def clone(self, image_id, name, size_bytes):
        """The clone baseline: clone Glance's snapshot, then resize."""
        with self.ioctx(self.images) as parent, self.ioctx(self.vms) as ioctx:
            self.rbd.RBD().clone(parent, image_id, 'snap', ioctx, name)
            with self.rbd.Image(ioctx, name) as image:
                image.resize(size_bytes)

    def import_file(self, path, name, size_bytes):
        """The naive way's last step: ``rbd import``, then resize."""
        subprocess.run(['rbd', '--conf', self.conf_file, '--id', 'admin',
                        '--keyring', self.keyring, 'import', '--no-progress',
                        path, '%s/%s' % (self.vms, name)],
                       check=True, capture_output=True, timeout=1800)
        with self.ioctx(self.vms) as ioctx:
            with self.rbd.Image(ioctx, name) as image:
                if image.size() < size_bytes:
                    image.resize(size_bytes)

    def remove_matching(self, words):
        """Remove every image of the vms pool whose name holds one of
        ``words``, snapshots first; clones go before their parents.

        :returns: the names that could not be removed.
        """
        words = [w for w in words if w]
        with self.ioctx(self.vms) as ioctx:
            left = [n for n in self.rbd.RBD().list(ioctx)
                    if any(w in n for w in words)]
        for _pass in range(5):
            failed = []
            for name in left:
                try:
                    self._remove_with_snapshots(name)
                except self.rbd.ImageNotFound:
                    pass
                except self.rbd.Error:
                    failed.append(name)
            if not failed:
                break
            left = failed
            time.sleep(1)
        return failed

    def _remove_with_snapshots(self, name):
        with self.ioctx(self.vms) as ioctx:
            with self.rbd.Image(ioctx, name) as image:
                for snap in list(image.list_snaps()):
                    if image.is_protected_snap(snap['name']):
                        image.unprotect_snap(snap['name'])
                    image.remove_snap(snap['name'])
            self.rbd.RBD().remove(ioctx, name)

    def available_bytes(self):
        ret, out, _err = self.connect().mon_command(
            json.dumps({'prefix': 'df', 'format': 'json'}), b'', timeout=30)
        for pool in json.loads(out)['pools'] if ret == 0 else []:
            if pool['name'] == self.vms:
                return pool['stats']['max_avail']
        return 0


class GlanceImages:
    """Images the benchmark uploads; every one is deleted at the end."""

    def __init__(self, stack, run_id):
        from glanceclient import client as glance_client
        self.url = stack['GLANCE_URL']
        self.access_log = stack['GLANCE_ACCESS_LOG']
        self.client = glance_client.Client('2', endpoint=self.url)
        self.run_id = run_id
        self.ids = set()       # not deleted yet
        self.created = set()   # ever

    def create(self, data, disk_format='raw', backend='local', attempts=3):
        """Upload ``data()`` (a stream with ``size``) as a new image.

        Glance on SQLite answers 500 ("database is locked") while others
        use it: that is the stack, not a sample, so it is retried here.
        """
        for attempt in range(1, attempts + 1):
            image_id = None
            try:
                image_id = self.client.images.create(
                    name='imaged-bench-%s' % self.run_id,
                    disk_format=disk_format, container_format='bare')['id']
                self.ids.add(image_id)
                self.created.add(image_id)
                with contextlib.closing(data()) as stream:
                    self.client.images.upload(image_id, stream,
                                              image_size=stream.size,
                                              backend=backend)
                image = dict(self.client.images.get(image_id))
                if image['status'] == 'active':
                    return image
                error = RuntimeError('image %s is %s after its upload' %
                                     (image_id, image['status']))
            except Exception as e:
                error = e
            if image_id is not None:
                with contextlib.suppress(Exception):
                    self.delete(image_id)
            if attempt < attempts:
                log('Glance upload failed (%s); again', describe(error))
                time.sleep(3 * attempt)
        raise error

    def delete(self, image_id, attempts=3):
        for attempt in range(1, attempts + 1):
            try:
                self.client.images.delete(image_id)
                break
            except Exception as e:
                if 'not found' in str(e).lower() or '404' in str(e):
                    break
                if attempt == attempts:
                    raise
                time.sleep(3 * attempt)
        self.ids.discard(image_id)

    def download(self, image_id, path):
        """The naive download: glanceclient into a file (holes for zeros,
        which keeps the file small and the baseline no slower)."""
        with open(path, 'wb') as f:
            for chunk in self.client.images.data(image_id):
                if chunk.count(0) == len(chunk):
                    f.seek(len(chunk), os.SEEK_CUR)
                else:
                    f.write(chunk)
            f.truncate()

    def downloads(self, image_id):
        """``GET .../file`` lines for the image in Glance's access log."""
        pattern = re.compile(r'GET /v2/images/%s/file' % image_id)
        with open(self.access_log, errors='replace') as f:
            return sum(1 for line in f if pattern.search(line))

    def problems(self):
        try:
            status = requests.get(self.url + '/versions', timeout=10) \
                .status_code
        except requests.RequestException as e:
            return ['Glance: %s' % describe(e)]
        return ['Glance answers %d' % status] if status >= 500 else []


class EchoServer:
    """A trivial oslo.messaging server in a child process: the RPC baseline.
    """

    def __init__(self, run_id):
        self.target = messaging.Target(topic='imaged-bench-echo',
                                       server='bench-%s' % run_id)
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'tools.bench', '--serve-echo',
             self.target.topic, self.target.server],
            cwd=REPO, stdout=subprocess.DEVNULL, start_new_session=True)
        self.client = messaging.get_rpc_client(
            rpc.get_transport(base.CONF), self.target)

    def wait_until_serving(self, timeout=60):
        fast = self.client.prepare(timeout=2)

        def answers():
            if self.process.poll() is not None:
                raise RuntimeError('the echo server exited with %s' %
                                   self.process.returncode)
            with contextlib.suppress(messaging.MessagingTimeout):
                return fast.call({}, 'ping') == 'pong'
        base.wait_for(answers, timeout, what='the echo RPC server')

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class EchoEndpoint:
    target = messaging.Target(version='1.0')

    def ping(self, ctxt):
        return 'pong'


def serve_echo(topic, server):
    """``--serve-echo``: answer ``ping`` until SIGTERM."""
    base.configure_client()
    srv = messaging.get_rpc_server(
        rpc.get_transport(base.CONF),
        messaging.Target(topic=topic, server=server), [EchoEndpoint()],
        access_policy=messaging.DefaultRPCAccessPolicy)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: stop.set())
    srv.start()
    stop.wait()
    srv.stop()
    srv.wait()
    rpc.cleanup()
    return 0


# -- the daemon under test ----------------------------------------------------

class WorkerDied(Exception):
    pass


class Agent:
    """The imaged daemon being measured, reached only over RPC and /proc."""

    def __init__(self, workdir, run_id):
        self.host = 'bench-%s' % run_id
        self.daemon = base.Daemon(workdir, self.host, {
            'DEFAULT': {'debug': 'false'},
            'glance': {'num_retries': '3'}})
        self.api = rpcapi.ImageAgentAPI(base.CONF)
        self.ctxt = context.RequestContext(user_id='bench',
                                           project_id='bench')

    def start(self):
        self.daemon.start()
        base.FunctionalTestCase.wait_until_serving(
            self.api, self.ctxt, self.host, self.daemon)

    def worker(self):
        kids = children(self.daemon.process.pid)
        return kids[0] if len(kids) == 1 else None

    def call(self, what, func):
        """``func()``, an RPC call; fails at once if the worker dies.

        Without this a crashed worker costs a whole call timeout.
        """
        worker, box = self.worker(), {}

        def run():
            try:
                box['result'] = func()
            except Exception as e:
                box['error'] = e
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
            if thread.is_alive() and worker and not alive(worker):
                raise WorkerDied("imaged's worker process %d died during "
                                 "%s%s" % (worker, what,
                                           self._death_note(worker)))
        if 'error' in box:
            raise box['error']
        return box['result']

    def _death_note(self, pid):
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for line in self.daemon.log().splitlines()[::-1]:
                if 'Child %d ' % pid in line:
                    return ' (%s)' % line.split(' [-] ', 1)[-1]
            time.sleep(0.2)
        return ''

    def create(self, instance_uuid, image_id, size_gb):
        """``(seconds, result, memory)`` of one create_root_disk call."""
        parent, worker = self.daemon.process.pid, self.worker()
        for pid in (parent, worker):
            if pid:
                reset_peak_rss(pid)
        idle = {'worker_idle': worker and proc_status_bytes(worker, 'VmRSS'),
                'parent_idle': proc_status_bytes(parent, 'VmRSS')}
        started = time.monotonic()
        result = self.call('create_root_disk', lambda: (
            self.api.create_root_disk(self.ctxt, self.host, instance_uuid,
                                      image_id, size_gb)))
        seconds = time.monotonic() - started
        if result['strategy'] == 'existing':
            raise RuntimeError('imaged returned the existing disk %s: the '
                               'sample measured nothing' % result['name'])
        memory = None
        if worker and worker == self.worker():
            memory = dict(idle,
                          worker_peak=proc_status_bytes(worker, 'VmHWM'),
                          parent_peak=proc_status_bytes(parent, 'VmHWM'))
        return seconds, result, memory

    def delete(self, instance_uuid):
        self.call('delete_root_disk', lambda: self.api.delete_root_disk(
            self.ctxt, self.host, instance_uuid))

    def capabilities(self, timeout):
        return self.api.client.prepare(server=self.host, timeout=timeout) \
            .call(self.ctxt, 'get_capabilities')

    def forget(self, image_id):
        """Drop what the daemon keeps on disk about an image (its cache)."""
        for top, dirs, files in os.walk(self.daemon.state_path):
            for name in files + dirs:
                path = os.path.join(top, name)
                if image_id not in name:
                    continue
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)


# -- figures ------------------------------------------------------------------

COMPARE = {'<': operator.lt, '<=': operator.le, '>=': operator.ge}


@dataclasses.dataclass
class Target:
    op: str          # a key of COMPARE
    bound: float
    text: str
    on: str = 'ratio'  # or 'value'


@dataclasses.dataclass
class Figure:
    section: int     # the numbering: 1 clone ... 7 memory
    key: str
    title: str
    unit: str
    baseline_label: str
    target: Target = None
    summary: str = 'median'  # or 'max'
    samples: list = dataclasses.field(default_factory=list)
    baseline_samples: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)

    def _summary(self, samples, how):
        samples = [s for s in samples if s is not None]
        if not samples:
            return None
        return max(samples) if how == 'max' else statistics.median(samples)

    @property
    def value(self):
        return self._summary(self.samples, self.summary)

    @property
    def baseline(self):
        return self._summary(self.baseline_samples, 'median')

    @property
    def ratio(self):
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self):
        if self.target is None:
            return None
        x = self.ratio if self.target.on == 'ratio' else self.value
        return None if x is None else \
            COMPARE[self.target.op](x, self.target.bound)

    def as_dict(self):
        return dict(dataclasses.asdict(self), value=self.value,
                    baseline=self.baseline, ratio=self.ratio, met=self.met)


class SampleFailed(Exception):
    pass


class StackDisturbed(Exception):
    pass


class NoRoom(Exception):
    pass


# -- the benchmark ------------------------------------------------------------

class Bench:

    def __init__(self, config, workdir, run_id):
        self.config = config
        self.workdir = workdir
        self.run_id = run_id
        self.stack = base.stack()
        self.ceph = AdminCeph(self.stack)
        self.glance = GlanceImages(self.stack, run_id)
        os.makedirs(os.path.join(workdir, 'imaged'))
        self.agent = Agent(os.path.join(workdir, 'imaged'), run_id)
        self.echo = None
        self.figures = {}
        self.series = {}
        self.instances = set()
        self.baseline_disks = set()
        self.retries, self.errors, self.skipped = [], [], []

    def figure(self, section, key, *args, **kwargs):
        if key not in self.figures:
            self.figures[key] = Figure(section, key, *args, **kwargs)
        return self.figures[key]

    def plot_point(self, series, size, value):
        self.series.setdefault(series, {}).setdefault(size, []).append(value)

    # -- robustness ----------------------------------------------------------

    def attempt(self, what, func, timed=True):
        """Run one sample; if it fails, wait for the stack and retry once.

        A timed sample during which a service of the stack restarted
        measured the stack, not imaged: it is done again (up to 3 times),
        whatever its outcome, and that does not count as imaged's retry.
        """
        failures = redone = 0
        while True:
            services = stack_services(self.stack['STACK_DIR']) \
                if timed else None
            try:
                return self._checked(func, services)
            except (SampleFailed, NoRoom):
                raise
            except StackDisturbed as e:
                redone += 1
                self.retries.append({'what': what, 'error': str(e),
                                     'stack': True})
                log('%s: %s; %s', what, e, 'again' if redone <= 3 else
                    'counted as a failure')
                if redone <= 3:
                    self.wait_for_stack()
                    continue
                error = e
            except Exception as e:
                error = e
            failures += 1
            if failures > 1:
                log('%s failed again: %s', what, describe(error))
                self.errors.append({'what': what, 'error': describe(error),
                                    'traceback': ''.join(
                                        traceback.format_exception(error))})
                raise SampleFailed(what) from error
            log('%s failed (%s); retrying once', what, describe(error))
            self.retries.append({'what': what, 'error': describe(error)})
            self.revive_agent()
            self.wait_for_stack()

    def _checked(self, func, services):
        if services is None:
            return func()
        try:
            result = func()
        except Exception as e:
            if stack_services(self.stack['STACK_DIR']) != services:
                raise StackDisturbed('a service of the stack restarted '
                                     'during the sample (%s)' %
                                     describe(e)) from e
            raise
        if stack_services(self.stack['STACK_DIR']) != services:
            raise StackDisturbed('a service of the stack restarted during '
                                 'the sample')
        return result

    def revive_agent(self):
        """Start imaged again if it exited (and say so)."""
        process = self.agent.daemon.process
        if process.poll() is None:
            return
        self.errors.append({'what': 'imaged', 'error': 'the daemon exited '
                            'with %s; started again' % process.returncode})
        log('imaged exited with %s; starting it again', process.returncode)
        self.agent.start()

    def problems(self):
        problems = self.glance.problems() + self.ceph.problems()
        try:
            problems += self.agent.capabilities(timeout=10)['problems']
        except Exception as e:
            problems.append('imaged: %s' % describe(e))
        return problems

    def wait_for_stack(self, timeout=180):
        time.sleep(3)
        deadline = time.monotonic() + timeout
        while True:
            problems = self.problems()
            if not problems:
                return
            if time.monotonic() > deadline:
                log('the stack still has problems: %s', '; '.join(problems))
                return
            time.sleep(3)

    def ensure_room(self, local_bytes, ceph_bytes, what):
        """Refuse a figure the disk or the cluster has no room for."""
        free = min(shutil.disk_usage(self.workdir).free,
                   shutil.disk_usage(self.stack['STACK_DIR']).free)
        avail = self.ceph.available_bytes()
        if free < local_bytes + 4 * GiB or avail < ceph_bytes + 2 * GiB:
            raise NoRoom('%s needs %s on disk and %s in Ceph; %s and %s are '
                         'free' % (what, size_text(local_bytes),
                                   size_text(ceph_bytes), size_text(free),
                                   size_text(avail)))

    # -- what samples make and remove ---------------------------------------

    @contextlib.contextmanager
    def fresh_image(self, data, disk_format='raw', backend='local'):
        """A new Glance image, forgotten everywhere when the block ends."""
        image = self.glance.create(data, disk_format, backend)
        try:
            yield image
        finally:
            self.forget_image(image['id'])

    def forget_image(self, image_id):
        self.ceph.remove_matching([image_id])
        self.agent.forget(image_id)
        self.glance.delete(image_id)

    @contextlib.contextmanager
    def disks(self):
        """Disks made in the block (imaged's and the baselines'), removed
        when it ends."""
        made = Disks(self)
        try:
            yield made
        finally:
            def delete(instance_uuid):
                with contextlib.suppress(Exception):
                    self.agent.delete(instance_uuid)
            with futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(delete, made.instances))
            left = self.ceph.remove_matching(made.instances + made.baseline)
            if left:
                raise RuntimeError('cannot remove disks %s' % left)

    def naive_create(self, made, image_id, size_gb, disk_format='raw'):
        """Seconds for the naive way: download, (convert,) rbd import."""
        name = made.baseline_name()
        tmp = tempfile.mkdtemp(dir=self.workdir)
        try:
            started = time.monotonic()
            path = os.path.join(tmp, 'download')
            self.glance.download(image_id, path)
            if disk_format != 'raw':
                raw = os.path.join(tmp, 'raw')
                subprocess.run(['qemu-img', 'convert', '-f', disk_format,
                                '-O', 'raw', path, raw], check=True,
                               capture_output=True, timeout=1800)
                os.unlink(path)
                path = raw
            self.ceph.import_file(path, name, size_gb * GiB)
            return time.monotonic() - started
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- sections ------------------------------------------------------------

    def run(self, sections):
        self.ceph.connect()
        if 'rpc' in sections:  # it boots while imaged does
            self.echo = EchoServer(self.run_id)
        self.agent.start()
        log('imaged %s is serving', self.agent.host)
        for section in SECTIONS:
            if section not in sections:
                continue
            try:
                getattr(self, 'measure_' + section)()
            except SampleFailed as e:
                log('section %s stopped: %s failed twice', section, e)
            except NoRoom as e:
                log('section %s skipped: %s', section, e)
                self.skipped.append({'section': section, 'reason': str(e)})
            except Exception as e:
                log('section %s stopped: %s', section, describe(e))
                self.errors.append({'what': 'section %s' % section,
                                    'error': describe(e),
                                    'traceback': traceback.format_exc()})
        self.derive()

    def measure_rpc(self):
        calls = self.config.rpc_calls
        self.echo.wait_until_serving()
        echo = self.echo.client.prepare(timeout=30)
        agent = self.agent.api.client.prepare(server=self.agent.host,
                                              timeout=30)
        fig = self.figure(
            6, 'rpc', 'get_capabilities, %d sequential calls' % calls,
            'calls/s', 'trivial oslo.messaging endpoint',
            Target('>=', 0.8, '>= 0.8x'))

        def by_echo():
            echo.call({}, 'ping')

        def by_imaged():
            agent.call(self.agent.ctxt, 'get_capabilities')

        def rates(rep):
            out = {}

            def rate(call):
                started = time.monotonic()
                for _i in range(calls):
                    call()
                out[call] = calls / (time.monotonic() - started)
            alternate(rep, lambda: rate(by_imaged), lambda: rate(by_echo))
            return out[by_imaged], out[by_echo]
        for _i in range(10):  # connections, caches
            by_echo()
            by_imaged()
        for rep in range(self.config.repetitions):
            agent_rate, echo_rate = self.attempt('rpc rep %d' % (rep + 1),
                                                 lambda: rates(rep))
            fig.samples.append(agent_rate)
            fig.baseline_samples.append(echo_rate)
            log('rpc rep %d: imaged %.0f calls/s, trivial %.0f calls/s',
                rep + 1, fig.samples[-1], fig.baseline_samples[-1])

    def measure_clone(self):
        for size in self.config.clone_sizes:
            self.ensure_room(size, 2 * size, 'clone %s' % size_text(size))
            image = self.attempt(
                'upload for clone %s' % size_text(size),
                lambda: self.glance.create(lambda: ImageData(size),
                                           backend='ceph'), timed=False)
            fig = self.figure(
                1, 'clone-%d' % size, 'clone, %s' % size_text(size), 's',
                'librbd clone + resize', Target('<=', 2.0, '<= 2x'))
            try:
                if size == self.config.clone_sizes[0]:  # unmeasured
                    self.attempt('clone warm-up', lambda: self.clone_sample(
                        image, size, 0, 'clone warm-up'))
                for rep in range(self.config.repetitions):
                    out = self.attempt(
                        'clone %s rep %d' % (size_text(size), rep + 1),
                        lambda: self.clone_sample(
                            image, size, rep, 'clone %s rep %d' % (
                                size_text(size), rep + 1)))
                    fig.samples.append(out['imaged'])
                    fig.baseline_samples.append(out['librbd'])
                    self.plot_point('clone (imaged)', size, out['imaged'])
                    self.plot_point('clone: librbd (baseline)', size,
                                    out['librbd'])
            finally:
                self.forget_image(image['id'])

    def clone_sample(self, image, size, rep, what):
        size_gb, out = disk_gb(size), {}
        with self.disks() as made:
            def by_imaged():
                out['imaged'], result, _mem = made.create(image['id'],
                                                          size_gb)
                if result['strategy'] != 'clone':
                    raise RuntimeError(
                        "imaged made a %s, not a clone, of image %s in "
                        "Glance's Ceph store" % (result['strategy'],
                                                 image['id']))

            def by_librbd():
                name = made.baseline_name()
                started = time.monotonic()
                self.ceph.clone(image['id'], name, size_gb * GiB)
                out['librbd'] = time.monotonic() - started
            alternate(rep, by_imaged, by_librbd)
        log('%s: imaged %.3fs, librbd %.3fs', what, out['imaged'],
            out['librbd'])
        return out

    def download_sample(self, what, data, size, rep, disk_format='raw',
                        second=False):
        """One fresh image: imaged's first (and second) disk, the naive way.

        :returns: dict of seconds and the first call's memory figures.
        """
        size_gb, out = disk_gb(size), {}
        with self.fresh_image(data, disk_format) as image, \
                self.disks() as made:
            def by_imaged():
                out['first'], _res, out['memory'] = made.create(image['id'],
                                                                size_gb)
                if second:
                    out['second'], res, _mem = made.create(image['id'],
                                                           size_gb)
                    out['second_strategy'] = res['strategy']

            def naive():
                out['naive'] = self.naive_create(made, image['id'], size_gb,
                                                 disk_format)
            alternate(rep, by_imaged, naive)
        log('%s rep %d: %s', what, rep + 1, ', '.join(
            '%s %.2fs' % (k, v) for k, v in out.items()
            if isinstance(v, float)))
        return out

    def measure_download(self):
        for size in self.config.download_sizes:
            text = size_text(size)
            self.ensure_room(3 * size, 3 * size, 'download %s' % text)
            first = self.figure(
                2, 'download-%d' % size, 'download %s, first disk' % text,
                's', 'naive: download, rbd import',
                Target('<=', 1 / 1.5, '<= 0.67x (1.5x faster)'))
            hit = self.figure(
                2, 'cache-hit-%d' % size, 'download %s, second disk' % text,
                's', 'imaged, first disk',
                Target('<=', 1 / 5, '<= 0.2x (5x faster)'))
            for rep in range(self.config.repetitions):
                out = self.attempt(
                    'download %s rep %d' % (text, rep + 1),
                    lambda: self.download_sample(
                        'download %s' % text, lambda: ImageData(size), size,
                        rep, second=True))
                first.samples.append(out['first'])
                first.baseline_samples.append(out['naive'])
                hit.samples.append(out['second'])
                hit.baseline_samples.append(out['first'])
                hit.notes.append('second disk by %s' %
                                 out['second_strategy'])
                self.record_memory(size, out['memory'])
                self.plot_point('download, first disk (imaged)', size,
                                out['first'])
                self.plot_point('download, second disk (imaged)', size,
                                out['second'])
                self.plot_point('download: naive (baseline)', size,
                                out['naive'])

    def memory_figures(self, size):
        text = size_text(size)
        target = Target('<', 200, '< 200 MiB', on='value')
        return (self.figure(7, 'memory-%d' % size,
                            'worker peak RSS, %s download' % text, 'MiB',
                            'worker RSS before', target),
                self.figure(7, 'memory-parent-%d' % size,
                            'parent peak RSS, %s download' % text, 'MiB',
                            'parent RSS before', target))

    def record_memory(self, size, memory):
        if size not in self.config.memory_sizes:
            return
        worker, parent = self.memory_figures(size)
        if not memory or None in memory.values():
            worker.notes.append("a sample could not read the worker's "
                                "memory")
            return
        worker.samples.append(memory['worker_peak'] / MiB)
        worker.baseline_samples.append(memory['worker_idle'] / MiB)
        parent.samples.append(memory['parent_peak'] / MiB)
        parent.baseline_samples.append(memory['parent_idle'] / MiB)
        self.plot_point('peak RSS, worker', size, memory['worker_peak'])

    def measure_sparse(self):
        size, data = self.config.sparse
        self.ensure_room(2 * size + data, 2 * data, 'sparse %s' %
                         size_text(size))
        fig = self.figure(
            3, 'sparse', 'sparse %s (%s data), first disk' % (
                size_text(size), size_text(data)), 's',
            'naive: download, rbd import')
        for rep in range(self.config.repetitions):
            out = self.attempt('sparse rep %d' % (rep + 1), lambda: (
                self.download_sample('sparse', lambda: ImageData.spread(
                    size, data), size, rep)))
            fig.samples.append(out['first'])
            fig.baseline_samples.append(out['naive'])
            self.plot_point('sparse, first disk (imaged)', size, out['first'])
            self.plot_point('sparse: naive (baseline)', size, out['naive'])

    def measure_qcow2(self):
        size, data = self.config.qcow2
        self.ensure_room(2 * size + 2 * data, 2 * data, 'qcow2')
        raw = os.path.join(self.workdir, 'qcow2-source.raw')
        qcow2 = os.path.join(self.workdir, 'image.qcow2')
        ImageData.spread(size, data).write_sparse(raw)
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                        raw, qcow2], check=True, capture_output=True)
        os.unlink(raw)
        fig = self.figure(
            4, 'qcow2', 'qcow2 %s (%s data), first disk' % (
                size_text(size), size_text(data)), 's',
            'naive: download, qemu-img convert, rbd import')
        for rep in range(self.config.repetitions):
            out = self.attempt('qcow2 rep %d' % (rep + 1), lambda: (
                self.download_sample('qcow2', lambda: ImageFile(qcow2), size,
                                     rep, disk_format='qcow2')))
            fig.samples.append(out['first'])
            fig.baseline_samples.append(out['naive'])
            self.plot_point('qcow2, first disk (imaged)', size, out['first'])
            self.plot_point('qcow2: naive (baseline)', size, out['naive'])
        os.unlink(qcow2)

    def measure_dedup(self):
        size, calls = self.config.dedup_size, self.config.dedup_calls
        self.ensure_room(3 * size, (calls + 2) * size, 'dedup')
        count = self.figure(
            5, 'dedup-downloads', '%d simultaneous calls, %s: downloads '
            '(worst)' % (calls, size_text(size)), 'downloads', 'ideal',
            Target('<=', 1, '1 download', on='value'), summary='max')
        total = self.figure(
            5, 'dedup-time', '%d simultaneous calls, %s: all done' % (
                calls, size_text(size)), 's', 'one call alone')
        for rep in range(self.config.repetitions):
            out = self.attempt('dedup rep %d' % (rep + 1),
                               lambda: self.dedup_sample(size, calls, rep))
            count.samples.append(out['downloads'])
            count.baseline_samples.append(1)
            total.samples.append(out['total'])
            total.baseline_samples.append(out['alone'])
            log('dedup rep %d: %d downloads, %d calls in %.2fs, one alone '
                '%.2fs', rep + 1, out['downloads'], calls, out['total'],
                out['alone'])

    def dedup_sample(self, size, calls, rep):
        size_gb, out = disk_gb(size), {}
        with self.fresh_image(lambda: ImageData(size)) as shared, \
                self.fresh_image(lambda: ImageData(size)) as single, \
                self.disks() as made:
            def simultaneous():
                errors = []

                def call():
                    try:
                        made.create(shared['id'], size_gb)
                    except Exception as e:
                        errors.append(e)
                threads = [threading.Thread(target=call)
                           for _i in range(calls)]
                started = time.monotonic()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                out['total'] = time.monotonic() - started
                if errors:
                    raise errors[0]

            def alone():
                out['alone'], _res, _mem = made.create(single['id'], size_gb)
            alternate(rep, simultaneous, alone)
            # Glance logs a request as it ends: let the count settle.
            counts = [self.glance.downloads(shared['id'])]
            while len(counts) < 3 or counts[-1] != counts[-2]:
                time.sleep(0.3)
                counts.append(self.glance.downloads(shared['id']))
            out['downloads'] = counts[-1]
        return out

    def measure_memory(self):
        for size in self.config.memory_sizes:
            text = size_text(size)
            worker, _parent = self.memory_figures(size)
            if worker.samples:  # the download section measured it
                continue
            self.ensure_room(3 * size, 2 * size, 'memory %s' % text)
            for rep in range(self.config.repetitions):
                out = self.attempt('memory %s rep %d' % (text, rep + 1),
                                   lambda: self.memory_sample(size))
                self.record_memory(size, out['memory'])
                self.plot_point('download, first disk (imaged)', size,
                                out['first'])
                log('memory %s rep %d: %.2fs, worker peak %s', text,
                    rep + 1, out['first'], '%.0f MiB' % worker.samples[-1]
                    if worker.samples else 'unknown')

    def memory_sample(self, size):
        with self.fresh_image(lambda: ImageData(size)) as image, \
                self.disks() as made:
            seconds, _res, memory = made.create(image['id'], disk_gb(size))
        return {'first': seconds, 'memory': memory}

    def derive(self):
        """Figures that compare imaged with itself."""
        cfg, figs = self.config, self.figures

        def compare(section, key, title, unit, label, target, pair):
            value, baseline = (figs.get(k) for k in pair)
            if value and baseline and value is not baseline and \
                    value.samples and baseline.samples:
                fig = self.figure(section, key, title, unit, label, target)
                fig.samples = value.samples
                fig.baseline_samples = baseline.samples
        small, large = cfg.clone_sizes[0], cfg.clone_sizes[-1]
        compare(1, 'clone-flat', 'clone, %s against %s' % (
            size_text(large), size_text(small)), 's',
            'imaged, %s' % size_text(small), Target('<=', 1.2, '<= 1.2x'),
            ('clone-%d' % large, 'clone-%d' % small))
        size, data = cfg.sparse
        compare(3, 'sparse-vs-dense', 'sparse %s against dense %s' % (
            size_text(size), size_text(data)), 's',
            'imaged, dense %s' % size_text(data),
            Target('<=', 1.5, '<= 1.5x'), ('sparse', 'download-%d' % data))
        small, large = cfg.memory_sizes[0], cfg.memory_sizes[-1]
        compare(7, 'memory-flat', 'worker peak RSS, %s against %s' % (
            size_text(large), size_text(small)), 'MiB',
            'worker peak, %s' % size_text(small),
            Target('<=', 1.2, '<= 1.2x'),
            ('memory-%d' % large, 'memory-%d' % small))

    # -- the end -------------------------------------------------------------

    def cleanup(self):
        """Remove everything the run made, whatever state it is in.

        :returns: what could not be removed.
        """
        log('cleaning up')
        processes = [p for p in (self.echo and self.echo.process,
                                 self.agent.daemon.process) if p is not None]
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        # imaged finishes the calls in flight before it exits: only then is
        # all it made in the pool.
        for process in processes:
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
        try:  # a call that timed out may still have made something
            left = self.ceph.remove_matching(sorted(
                self.instances | self.baseline_disks | self.glance.created))
        except Exception as e:
            left = ['RBD images (%s)' % describe(e)]
        for image_id in list(self.glance.ids):
            try:
                self.glance.delete(image_id)
            except Exception as e:
                left.append('Glance image %s (%s)' % (image_id, describe(e)))
        self.ceph.close()
        if left:
            log('could not remove: %s', ', '.join(left))
        log('clean')
        return left


class Disks:
    """The disks one sample makes: imaged's, by instance, and baselines'."""

    def __init__(self, bench):
        self.bench = bench
        self.instances, self.baseline = [], []

    def create(self, image_id, size_gb):
        instance_uuid = str(uuid.uuid4())
        self.bench.instances.add(instance_uuid)
        self.instances.append(instance_uuid)
        return self.bench.agent.create(instance_uuid, image_id, size_gb)

    def baseline_name(self):
        name = 'imaged-bench-%s-%s' % (self.bench.run_id,
                                       uuid.uuid4().hex[:8])
        self.bench.baseline_disks.add(name)
        self.baseline.append(name)
        return name


# -- output -------------------------------------------------------------------

def number(value, unit):
    if value is None:
        return '-'
    if unit == 's':
        return '%.3f s' % value if value < 10 else '%.1f s' % value
    if unit == 'calls/s':
        return '%.0f/s' % value
    if unit == 'MiB':
        return '%.0f MiB' % value
    return '%g' % value


def table(report, figures):
    m, src = report['machine'], report['imaged']
    lines = [
        'imaged benchmark, %s, %s configuration, median of %d '
        'repetitions' % (report['date'], report['configuration'],
                         report['repetitions']),
        'machine: %d CPUs (%s), %.1f GiB RAM, Linux %s' % (
            m['nproc'], m['cpu_model'], m['mem_total_bytes'] / GiB,
            m['kernel']),
        'imaged: %s at %s%s' % (src['tree'], src['commit'],
                                ' + uncommitted changes in imaged/'
                                if src['uncommitted'] else ''),
        '']
    rows = [('#', 'figure', 'imaged', 'baseline', 'ratio', 'target',
             'result')]
    for f in figures:
        rows.append((str(f.section), f.title, number(f.value, f.unit),
                     '%s %s' % (number(f.baseline, f.unit),
                                f.baseline_label),
                     '%.2fx' % f.ratio if f.ratio is not None else '-',
                     f.target.text if f.target else '(report only)',
                     {True: 'met', False: 'MISSED', None: '-'}[f.met]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        lines.append('  '.join(c.ljust(w) for c, w in zip(row, widths))
                     .rstrip())
        if i == 0:
            lines.append('  '.join('-' * w for w in widths))
    notes = ['%s: %s' % (f.title, ', '.join(sorted(set(f.notes))))
             for f in figures if f.notes]
    notes += ['%s: %s (%s)' % ('redone' if r.get('stack') else
                               'retried once', r['what'], r['error'])
              for r in report['retries']]
    notes += ['FAILED: %s (%s)' % (e['what'], e['error'])
              for e in report['errors']]
    notes += ['skipped %s: %s' % (s['section'], s['reason'])
              for s in report['skipped']]
    notes += ['not removed: %s' % ', '.join(report['not_removed'])] \
        if report['not_removed'] else []
    met = [f.met for f in figures if f.met is not None]
    return '\n'.join(lines + ([''] + notes if notes else []) + [
        '', 'targets met: %d of %d; took %.0f s' % (
            sum(met), len(met), report['duration_s'])])


def draw_plot(report, path):
    try:
        import matplotlib
        matplotlib.use('Agg')
        from matplotlib import pyplot
    except ImportError:
        log('matplotlib is missing (pip install -r bench-requirements.txt): '
            'no plot')
        return False
    colours = {'clone': 'tab:blue', 'download, first': 'tab:orange',
               'download:': 'tab:orange', 'download, second': 'tab:green',
               'sparse': 'tab:purple', 'qcow2': 'tab:brown'}
    fig, (times, memory) = pyplot.subplots(
        1, 2, figsize=(13, 5.5), gridspec_kw={'width_ratios': [2, 1]})
    for name, points in sorted(report['series'].items()):
        sizes = sorted(points, key=int)
        mib = [int(s) / MiB for s in sizes]
        values = [statistics.median(points[s]) for s in sizes]
        if name.startswith('peak RSS'):
            memory.plot(mib, [v / MiB for v in values], 'o-', label=name)
            continue
        baseline = 'baseline' in name
        times.plot(mib, values, 'o--' if baseline else 'o-',
                   color=next((c for k, c in colours.items()
                               if name.startswith(k)), None),
                   alpha=0.6 if baseline else 1.0, label=name)
    for axes, memory_only in ((times, False), (memory, True)):
        sizes = sorted({int(size) for name, points in report['series'].items()
                        if name.startswith('peak RSS') or not memory_only
                        for size in points})
        axes.set_xscale('log', base=2)
        axes.set_xticks([s / MiB for s in sizes], [size_text(s)
                                                   for s in sizes])
        axes.minorticks_off()
        axes.set_xlabel('image size (virtual, for sparse and qcow2)')
        axes.grid(True, alpha=0.3)
    times.set_yscale('log')
    times.yaxis.set_major_formatter('{x:g} s')
    times.set_ylabel('median')
    times.set_title('time against image size')
    times.legend(fontsize=7)
    memory.axhline(200, color='red', linestyle=':', label='target')
    memory.set_ylabel('MiB')
    memory.set_title("worker's peak RSS, first disk by download")
    memory.legend(fontsize=7)
    fig.suptitle('imaged benchmark, %s, %s, %d CPUs (%s)' % (
        report['date'], report['configuration'], report['machine']['nproc'],
        report['machine']['cpu_model']), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)
    return True


# -- main ---------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='tools/bench.py', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes and 1 repetition (CI: < 60 s)')
    parser.add_argument('--repetitions', '-n', type=int,
                        help='samples per figure (full: 3, quick: 1)')
    parser.add_argument('--only', default=','.join(SECTIONS),
                        help='comma-separated sections to run, of: %s' %
                        ', '.join(SECTIONS))
    parser.add_argument('--json', default='bench-results/bench.json',
                        help='where to write the raw figures')
    parser.add_argument('--plot', default='bench-results/bench.png',
                        help='where to draw the plot')
    parser.add_argument('--imaged-tree', metavar='DIR',
                        help='run the daemon from this source tree (e.g. a '
                        'git worktree of another commit)')
    parser.add_argument('--serve-echo', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.only.split(',')) - set(SECTIONS)
    if unknown:
        parser.error('unknown sections: %s' % ', '.join(sorted(unknown)))
    if args.repetitions is not None and args.repetitions < 1:
        parser.error('--repetitions must be at least 1')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve_echo:
        return serve_echo(*args.serve_echo)
    config = dataclasses.replace(QUICK if args.quick else FULL)
    config.repetitions = args.repetitions or config.repetitions
    tree = os.path.abspath(args.imaged_tree or REPO)
    if args.imaged_tree:
        os.environ['PYTHONPATH'] = os.pathsep.join(
            [tree] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    # SIGTERM ends the run as Ctrl-C does: the cleanup still runs.
    signal.signal(signal.SIGTERM, lambda *_a: sys.exit(143))
    run_id = uuid.uuid4().hex[:8]
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')
    source = source_facts(tree)
    base.configure_client()
    base.CONF.set_override('long_rpc_timeout', config.call_timeout)
    for path in (args.json, args.plot):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix='imaged-bench-', dir='/var/tmp')
    bench, left = None, []
    try:
        bench = Bench(config, workdir, run_id)
        bench.run(args.only.split(','))
    except Exception as e:
        log('the benchmark could not run: %s', describe(e))
        traceback.print_exc()
        if bench is None:
            return 1
        bench.errors.append({'what': 'setup', 'error': describe(e),
                             'traceback': traceback.format_exc()})
    finally:
        if bench is not None:
            left = bench.cleanup()
            for name, suffix in (('imaged.log', '-imaged.log'),
                                 ('stderr.log', '-imaged-stderr.log')):
                with contextlib.suppress(OSError):  # for a post mortem
                    shutil.copy(os.path.join(bench.agent.daemon.workdir,
                                             name),
                                os.path.splitext(args.json)[0] + suffix)
        shutil.rmtree(workdir, ignore_errors=True)
    figures = sorted(bench.figures.values(), key=lambda f: f.section)
    report = {
        'date': date, 'machine': machine_facts(),
        'imaged': source,
        'configuration': 'quick' if args.quick else 'full',
        'repetitions': config.repetitions,
        'config': dataclasses.asdict(config),
        'sections': args.only.split(','),
        'duration_s': time.monotonic() - STARTED,
        'figures': [f.as_dict() for f in figures],
        'series': {name: {str(size): values
                          for size, values in points.items()}
                   for name, points in bench.series.items()},
        'retries': bench.retries, 'errors': bench.errors,
        'skipped': bench.skipped, 'not_removed': left,
        'glance_images': sorted(bench.glance.created),
        'instances': sorted(bench.instances)}
    with open(args.json, 'w') as f:
        json.dump(report, f, indent=1)
    plotted = draw_plot(report, args.plot)
    print(table(report, figures))
    print('\nraw figures: %s%s' % (
        args.json, '; plot: %s' % args.plot if plotted else ''))
    return 1 if bench.errors else 0


if __name__ == '__main__':
    sys.exit(main())
