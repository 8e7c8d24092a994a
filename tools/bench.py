"""Benchmarks of imaged against the local stack (``tools/stack.sh start``).

Starts its own imaged daemon and calls it only over RPC, like a scheduler
would; measures each figure beside a baseline taken in the same run (the same
work done directly with librbd, glanceclient, the ``rbd`` CLI or
oslo.messaging), because absolute times drift on a shared machine while
ratios hold. Every figure is the median of ``--repetitions`` samples; a
sample that fails is retried once, and the retry is reported.

    .venv/bin/python -m tools.bench            # full: about 15 minutes
    .venv/bin/python -m tools.bench --quick    # tiny sizes, under a minute

Prints a table, writes the raw figures as JSON (``--json``) and a plot of
time against image size (``--plot``). Exits 0 whenever it measured, whether
or not the targets were met; 1 when imaged or a baseline failed twice.
Everything it creates (Glance images, RBD images, its daemon and state) is
removed at the end, also on failure or SIGTERM.
"""

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import math
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

if __package__ in (None, ''):  # run as a script: make the repository root
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


FULL = Config(repetitions=3, clone_sizes=(64 * MiB, GiB, 4 * GiB),
              download_sizes=(256 * MiB, GiB), sparse=(4 * GiB, 256 * MiB),
              qcow2=(GiB, 256 * MiB), dedup_calls=16, dedup_size=256 * MiB,
              rpc_calls=200, memory_sizes=(GiB, 4 * GiB))
QUICK = Config(repetitions=1, clone_sizes=(4 * MiB, 16 * MiB, 64 * MiB),
               download_sizes=(8 * MiB, 32 * MiB), sparse=(128 * MiB, 8 * MiB),
               qcow2=(64 * MiB, 8 * MiB), dedup_calls=16, dedup_size=8 * MiB,
               rpc_calls=50, memory_sizes=(32 * MiB, 128 * MiB))


def size_text(n):
    if n >= GiB and n % GiB == 0:
        return '%d GiB' % (n // GiB)
    return '%d MiB' % (n // MiB) if n % MiB == 0 else '%d B' % n


def disk_gb(size):
    return max(1, math.ceil(size / GiB))


def log(msg, *args):
    print('[%7.1fs] %s' % (time.monotonic() - STARTED, msg % args),
          file=sys.stderr, flush=True)


STARTED = time.monotonic()


# -- image data ---------------------------------------------------------------

class ImageData(io.RawIOBase):
    """Image bytes made as they are read: nothing is held but one MiB.

    ``data_mib`` says which MiB hold data (all by default); the others read
    as zeros. Every data MiB is one random MiB stamped with its index, so no
    block is all zeros and no two MiB are alike: skipping zeros cannot cheat.
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
        """Write the image to a sparse file at ``path``."""
        with open(path, 'wb') as f:
            for index in range(self.size // MiB):
                block = self.mib(index)
                if block is not None:
                    os.pwrite(f.fileno(), block, index * MiB)
            f.truncate(self.size)


# -- the machine and the code under test -------------------------------------

def machine_facts():
    facts = {'nproc': len(os.sched_getaffinity(0)), 'cpu_model': None,
             'mem_total_bytes': None, 'kernel': os.uname().release}
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                facts['cpu_model'] = line.split(':', 1)[1].strip()
                break
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemTotal:'):
                facts['mem_total_bytes'] = int(line.split()[1]) * 1024
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
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def reset_peak_rss(pid):
    """Start VmHWM afresh from the current RSS (Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        with open('/proc/%d/clear_refs' % pid, 'w') as f:
            f.write('5')


def children(pid):
    kids = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir('/proc/%d/task' % pid):
            with open('/proc/%d/task/%s/children' % (pid, task)) as f:
                kids += [int(p) for p in f.read().split()]
    return kids


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

    def reconnect(self):
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.shutdown()
        return self.connect()

    def ioctx(self, pool):
        return self.connect().open_ioctx(pool)

    def problems(self):
        try:
            cluster = self.connect()
            if not cluster.pool_exists(self.vms):
                return ['Ceph pool %s is missing' % self.vms]
        except Exception as e:
            self.reconnect_later()
            return ['Ceph: %s' % e]
        return []

    def reconnect_later(self):
        with contextlib.suppress(Exception):
            self.reconnect()

    def clone(self, image_id, name, size_bytes):
        """The clone baseline: clone Glance's snapshot, then resize."""
        with self.ioctx(self.images) as parent, self.ioctx(self.vms) as ioctx:
            self.rbd.RBD().clone(parent, image_id, 'snap', ioctx, name)
            with self.rbd.Image(ioctx, name) as image:
                image.resize(size_bytes)

    def import_file(self, path, name, size_bytes):
        """The naive baseline: ``rbd import``, then resize."""
        subprocess.run(['rbd', '--conf', self.conf_file, '--id', 'admin',
                        '--keyring', self.keyring, 'import', '--no-progress',
                        path, '%s/%s' % (self.vms, name)],
                       check=True, capture_output=True, timeout=1800)
        with self.ioctx(self.vms) as ioctx:
            with self.rbd.Image(ioctx, name) as image:
                if image.size() < size_bytes:
                    image.resize(size_bytes)

    def names(self):
        with self.ioctx(self.vms) as ioctx:
            return self.rbd.RBD().list(ioctx)

    def remove_matching(self, words):
        """Remove every image of the vms pool whose name holds one of
        ``words``, with its snapshots; clones go before their parents.

        :returns: names that could not be removed.
        """
        words = [w for w in words if w]
        left = [n for n in self.names() if any(w in n for w in words)]
        for _pass in range(4):
            failed = []
            for name in left:
                try:
                    self._remove_with_snapshots(name)
                except self.rbd.ImageNotFound:
                    pass
                except self.rbd.Error:
                    failed.append(name)
            if not failed:
                return []
            left = failed
            time.sleep(1)
        return left

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
        self.ids = set()

    def create(self, data, size, disk_format='raw', backend='local'):
        image = self.client.images.create(
            name='imaged-bench-%s' % self.run_id, disk_format=disk_format,
            container_format='bare')
        self.ids.add(image['id'])
        self.client.images.upload(image['id'], data, image_size=size,
                                  backend=backend)
        image = dict(self.client.images.get(image['id']))
        if image['status'] != 'active':
            raise RuntimeError('Glance image %s is %s after its upload' %
                               (image['id'], image['status']))
        return image

    def delete(self, image_id):
        try:
            self.client.images.delete(image_id)
        except Exception as e:
            if 'not found' not in str(e).lower() and '404' not in str(e):
                raise
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
            if requests.get(self.url + '/versions', timeout=10).status_code \
                    < 500:
                return []
            return ['Glance answers with an error']
        except requests.RequestException as e:
            return ['Glance: %s' % e]


class EchoServer:
    """A trivial oslo.messaging server, in a child process: the RPC baseline.
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
    transport = rpc.get_transport(base.CONF)
    srv = messaging.get_rpc_server(
        transport, messaging.Target(topic=topic, server=server),
        [EchoEndpoint()], access_policy=messaging.DefaultRPCAccessPolicy)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: stop.set())
    srv.start()
    stop.wait()
    srv.stop()
    srv.wait()
    rpc.cleanup()
    return 0


# -- the daemon under test ----------------------------------------------------

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

    def create(self, instance_uuid, image_id, size_gb):
        """``(seconds, result, memory)`` of one create_root_disk call."""
        parent, worker = self.daemon.process.pid, self.worker()
        for pid in (parent, worker):
            if pid:
                reset_peak_rss(pid)
        idle = worker and proc_status_bytes(worker, 'VmRSS')
        started = time.monotonic()
        result = self.api.create_root_disk(self.ctxt, self.host,
                                           instance_uuid, image_id, size_gb)
        seconds = time.monotonic() - started
        if result['strategy'] == 'existing':
            raise RuntimeError('imaged returned the existing disk %s: the '
                               'sample measured nothing' % result['name'])
        memory = None
        if worker and worker == self.worker():
            memory = {'worker_peak': proc_status_bytes(worker, 'VmHWM'),
                      'worker_idle': idle,
                      'parent_peak': proc_status_bytes(parent, 'VmHWM')}
        return seconds, result, memory

    def delete(self, instance_uuid):
        self.api.delete_root_disk(self.ctxt, self.host, instance_uuid)

    def capabilities(self, timeout=None):
        if timeout is None:
            return self.api.get_capabilities(self.ctxt, self.host)
        return self.api.client.prepare(server=self.host, timeout=timeout) \
            .call(self.ctxt, 'get_capabilities')

    def forget(self, image_id):
        """Drop what the daemon keeps on disk about an image (its cache)."""
        for top, dirs, files in os.walk(self.daemon.state_path):
            for name in files + dirs:
                if image_id in name:
                    path = os.path.join(top, name)
                    if os.path.isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)


# -- figures ------------------------------------------------------------------

@dataclasses.dataclass
class Target:
    op: str          # '<=' or '>='
    bound: float
    text: str
    on: str = 'ratio'  # or 'value'

    def met(self, figure):
        x = figure.ratio if self.on == 'ratio' else figure.value
        if x is None:
            return None
        return x <= self.bound if self.op == '<=' else x >= self.bound


@dataclasses.dataclass
class Figure:
    key: str
    title: str
    unit: str
    baseline_label: str
    target: Target = None
    samples: list = dataclasses.field(default_factory=list)
    baseline_samples: list = dataclasses.field(default_factory=list)
    summary: str = 'median'
    notes: list = dataclasses.field(default_factory=list)

    @staticmethod
    def _summary(samples, how):
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
        return self.target.met(self) if self.target else None

    def as_dict(self):
        return {'key': self.key, 'title': self.title, 'unit': self.unit,
                'value': self.value, 'samples': self.samples,
                'summary': self.summary,
                'baseline': {'label': self.baseline_label,
                             'value': self.baseline,
                             'samples': self.baseline_samples},
                'ratio': self.ratio,
                'target': dataclasses.asdict(self.target)
                if self.target else None,
                'met': self.met, 'notes': self.notes}


class SampleFailed(Exception):
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

    # -- bookkeeping ---------------------------------------------------------

    def figure(self, key, *args, **kwargs):
        if key not in self.figures:
            self.figures[key] = Figure(key, *args, **kwargs)
        return self.figures[key]

    def plot_point(self, series, size, seconds):
        self.series.setdefault(series, {}).setdefault(size, []).append(
            seconds)

    def new_instance(self):
        instance_uuid = str(uuid.uuid4())
        self.instances.add(instance_uuid)
        return instance_uuid

    def new_baseline_disk(self):
        name = 'imaged-bench-%s-%s' % (self.run_id, uuid.uuid4().hex[:8])
        self.baseline_disks.add(name)
        return name

    # -- robustness ----------------------------------------------------------

    def attempt(self, what, func):
        """Run one sample; if it fails, wait for the stack and retry once."""
        try:
            return func()
        except (SampleFailed, NoRoom):
            raise
        except Exception as e:
            log('%s failed (%s); retrying once', what, describe(e))
            self.retries.append({'what': what, 'error': describe(e)})
            self.revive_agent()
            self.wait_for_stack()
        try:
            return func()
        except Exception as e:
            log('%s failed again: %s', what, describe(e))
            self.errors.append({'what': what, 'error': describe(e),
                                'traceback': traceback.format_exc()})
            raise SampleFailed(what) from e

    def revive_agent(self):
        """Start imaged again if it exited (and say so)."""
        process = self.agent.daemon.process
        if process.poll() is None:
            return
        self.errors.append({'what': 'imaged', 'error': 'the daemon exited '
                            'with %s; started it again' % process.returncode})
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
        free = shutil.disk_usage(self.workdir).free
        glance_free = shutil.disk_usage(self.stack['STACK_DIR']).free
        avail = self.ceph.available_bytes()
        if min(free, glance_free) < local_bytes + 4 * GiB or \
                avail < ceph_bytes + 2 * GiB:
            raise NoRoom('%s needs %s on disk and %s in Ceph; %s and %s are '
                         'free' % (what, size_text(local_bytes),
                                   size_text(ceph_bytes),
                                   size_text(min(free, glance_free)),
                                   size_text(avail)))

    @contextlib.contextmanager
    def fresh_image(self, data, size, disk_format='raw', backend='local'):
        """A new Glance image, forgotten everywhere when the block ends."""
        image = self.glance.create(data, size, disk_format, backend)
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
        """Instance uuids and baseline disk names, removed when it ends."""
        made = {'instances': [], 'baseline': []}
        try:
            yield made
        finally:
            for instance_uuid in made['instances']:
                with contextlib.suppress(Exception):
                    self.agent.delete(instance_uuid)
            left = self.ceph.remove_matching(made['instances'] +
                                             made['baseline'])
            if left:
                raise RuntimeError('cannot remove disks %s' % left)

    def create(self, made, image_id, size_gb):
        instance_uuid = self.new_instance()
        made['instances'].append(instance_uuid)
        return self.agent.create(instance_uuid, image_id, size_gb)

    def baseline_disk(self, made):
        name = self.new_baseline_disk()
        made['baseline'].append(name)
        return name

    def naive_create(self, made, image_id, size_gb, disk_format='raw'):
        """Seconds for the naive way: download, (convert,) rbd import."""
        name = self.baseline_disk(made)
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
        self.derive()

    def measure_rpc(self):
        cfg = self.config
        self.echo = EchoServer(self.run_id)
        self.echo.wait_until_serving()
        echo = self.echo.client.prepare(timeout=30)
        agent = self.agent.api.client.prepare(server=self.agent.host,
                                              timeout=30)
        fig = self.figure(
            'rpc', 'get_capabilities, %d sequential calls' % cfg.rpc_calls,
            'calls/s', 'trivial oslo.messaging endpoint',
            Target('>=', 0.8, '>= 0.8x'))

        def rate(call):
            started = time.monotonic()
            for _i in range(cfg.rpc_calls):
                call()
            return cfg.rpc_calls / (time.monotonic() - started)

        def echo_call():
            echo.call({}, 'ping')

        def imaged_call():
            agent.call(self.agent.ctxt, 'get_capabilities')
        for _i in range(10):  # warm up connections and caches
            echo_call()
            imaged_call()
        for rep in range(cfg.repetitions):
            def sample():
                pair = [(fig.baseline_samples, echo_call),
                        (fig.samples, imaged_call)]
                rates = [(dest, rate(call))
                         for dest, call in pair[::1 - 2 * (rep % 2)]]
                for dest, value in rates:
                    dest.append(value)
                return rates
            self.attempt('rpc rep %d' % (rep + 1), sample)
            log('rpc rep %d: imaged %.0f calls/s, trivial %.0f calls/s',
                rep + 1, fig.samples[-1], fig.baseline_samples[-1])

    def measure_clone(self):
        cfg = self.config
        for size in cfg.clone_sizes:
            self.ensure_room(size, 2 * size, 'clone %s' % size_text(size))
            image = self.attempt(
                'upload clone %s' % size_text(size),
                lambda: self.glance.create(ImageData(size), size,
                                           backend='ceph'))
            try:
                fig = self.figure(
                    'clone-%s' % size_text(size).replace(' ', ''),
                    'clone, %s image' % size_text(size), 's',
                    'librbd clone + resize', Target('<=', 2.0, '<= 2x'))
                for rep in range(cfg.repetitions):
                    self.attempt('clone %s rep %d' % (size_text(size),
                                                      rep + 1),
                                 lambda: self.clone_sample(fig, image, size,
                                                           rep))
            finally:
                self.forget_image(image['id'])

    def clone_sample(self, fig, image, size, rep):
        size_gb = disk_gb(size)
        with self.disks() as made:
            def by_imaged():
                seconds, result, _mem = self.create(made, image['id'],
                                                    size_gb)
                if result['strategy'] != 'clone':
                    raise RuntimeError(
                        'imaged used strategy %s, not clone, for image %s '
                        'in Glance\'s Ceph store' % (result['strategy'],
                                                     image['id']))
                return seconds

            def by_librbd():
                name = self.baseline_disk(made)
                started = time.monotonic()
                self.ceph.clone(image['id'], name, size_gb * GiB)
                return time.monotonic() - started
            runs = [by_imaged, by_librbd] if rep % 2 == 0 else \
                [by_librbd, by_imaged]
            times = {run: run() for run in runs}
        fig.samples.append(times[by_imaged])
        fig.baseline_samples.append(times[by_librbd])
        self.plot_point('clone (imaged)', size, times[by_imaged])
        self.plot_point('clone (librbd, baseline)', size, times[by_librbd])
        log('clone %s rep %d: imaged %.3fs, librbd %.3fs', size_text(size),
            rep + 1, times[by_imaged], times[by_librbd])

    def download_sample(self, size, data, label, rep, disk_format='raw',
                        second=False):
        """One fresh image: imaged's first (and second) disk, the naive way.

        :returns: dict of seconds and the first call's memory figures.
        """
        size_gb = disk_gb(size)
        out = {}
        stream = data()
        with self.fresh_image(stream, stream.size, disk_format) as image, \
                self.disks() as made:
            def by_imaged():
                out['first'], _res, out['memory'] = self.create(
                    made, image['id'], size_gb)
                if second:
                    out['second'], res, _mem = self.create(
                        made, image['id'], size_gb)
                    out['second_strategy'] = res['strategy']

            def naive():
                out['naive'] = self.naive_create(made, image['id'], size_gb,
                                                 disk_format)
            for run in ([by_imaged, naive] if rep % 2 == 0
                        else [naive, by_imaged]):
                run()
        log('%s rep %d: %s', label, rep + 1, ', '.join(
            '%s %.2fs' % (k, v) for k, v in out.items()
            if isinstance(v, float)))
        return out

    def measure_download(self):
        cfg = self.config
        for size in cfg.download_sizes:
            self.ensure_room(3 * size, 3 * size, 'download %s' %
                             size_text(size))
            key = size_text(size).replace(' ', '')
            first = self.figure(
                'download-%s' % key, 'download, first disk, %s' %
                size_text(size), 's', 'naive download + rbd import',
                Target('<=', 1 / 1.5, '<= 0.67x (1.5x faster)'))
            hit = self.figure(
                'cache-hit-%s' % key, 'download, second disk (cache hit), '
                '%s' % size_text(size), 's', 'imaged first disk',
                Target('<=', 1 / 5, '<= 0.2x (5x faster)'))
            memory = self.figure(
                'memory-%s' % key, 'peak RSS of the worker, %s download' %
                size_text(size), 'MiB', 'worker RSS before the call',
                Target('<', 200, '< 200 MiB', on='value'))
            for rep in range(cfg.repetitions):
                out = self.attempt(
                    'download %s rep %d' % (size_text(size), rep + 1),
                    lambda: self.download_sample(
                        size, lambda: ImageData(size),
                        'download %s' % size_text(size), rep, second=True))
                first.samples.append(out['first'])
                first.baseline_samples.append(out['naive'])
                hit.samples.append(out['second'])
                hit.baseline_samples.append(out['first'])
                if out['second_strategy'] != 'download':
                    hit.notes.append('second disk by %s' %
                                     out['second_strategy'])
                self.record_memory(memory, size, out['memory'])
                self.plot_point('download, first disk (imaged)', size,
                                out['first'])
                self.plot_point('download, cache hit (imaged)', size,
                                out['second'])
                self.plot_point('naive download + rbd import (baseline)',
                                size, out['naive'])

    def record_memory(self, fig, size, memory):
        if not memory or None in memory.values():
            fig.notes.append('a sample could not read the worker\'s memory')
            return
        fig.samples.append(memory['worker_peak'] / MiB)
        fig.baseline_samples.append(memory['worker_idle'] / MiB)
        self.plot_point('peak RSS, worker', size, memory['worker_peak'])
        parent = self.figure(
            'memory-parent-%s' % size_text(size).replace(' ', ''),
            'peak RSS of the parent, %s download' % size_text(size), 'MiB',
            'worker RSS before the call',
            Target('<', 200, '< 200 MiB', on='value'))
        parent.samples.append(memory['parent_peak'] / MiB)
        parent.baseline_samples.append(memory['worker_idle'] / MiB)

    def measure_sparse(self):
        cfg = self.config
        size, data = cfg.sparse
        self.ensure_room(2 * size + data, 2 * data, 'sparse %s' %
                         size_text(size))
        fig = self.figure(
            'sparse', 'download, first disk, sparse %s holding %s' % (
                size_text(size), size_text(data)), 's',
            'naive download + rbd import')
        for rep in range(cfg.repetitions):
            out = self.attempt(
                'sparse rep %d' % (rep + 1),
                lambda: self.download_sample(
                    size, lambda: ImageData.spread(size, data), 'sparse',
                    rep))
            fig.samples.append(out['first'])
            fig.baseline_samples.append(out['naive'])
            self.plot_point('sparse, first disk (imaged)', size, out['first'])
            self.plot_point('sparse, naive (baseline)', size, out['naive'])

    def measure_qcow2(self):
        cfg = self.config
        size, data = cfg.qcow2
        self.ensure_room(2 * size + 2 * data, 2 * data, 'qcow2')
        raw = os.path.join(self.workdir, 'qcow2-source.raw')
        qcow2 = os.path.join(self.workdir, 'image.qcow2')
        ImageData.spread(size, data).write_sparse(raw)
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                        raw, qcow2], check=True, capture_output=True)
        os.unlink(raw)
        fig = self.figure(
            'qcow2', 'download, first disk, qcow2 %s holding %s' % (
                size_text(size), size_text(data)), 's',
            'naive download + qemu-img convert + rbd import')
        try:
            for rep in range(cfg.repetitions):
                out = self.attempt(
                    'qcow2 rep %d' % (rep + 1),
                    lambda: self.download_sample(
                        size, lambda: QcowFile(qcow2), 'qcow2', rep,
                        disk_format='qcow2'))
                fig.samples.append(out['first'])
                fig.baseline_samples.append(out['naive'])
                self.plot_point('qcow2, first disk (imaged)', size,
                                out['first'])
                self.plot_point('qcow2, naive (baseline)', size,
                                out['naive'])
        finally:
            os.unlink(qcow2)

    def measure_dedup(self):
        cfg = self.config
        size, calls = cfg.dedup_size, cfg.dedup_calls
        self.ensure_room(3 * size, (calls + 2) * size, 'dedup')
        count = self.figure(
            'dedup-downloads', 'downloads for %d simultaneous calls, %s '
            'image (worst of all repetitions)' % (calls, size_text(size)),
            'downloads', 'ideal', Target('<=', 1, '1 download', on='value'),
            summary='max')
        total = self.figure(
            'dedup-time', '%d simultaneous calls, all done, %s image' % (
                calls, size_text(size)), 's', 'one call alone')
        for rep in range(cfg.repetitions):
            downloads, seconds, alone = self.attempt(
                'dedup rep %d' % (rep + 1),
                lambda: self.dedup_sample(size, calls, rep))
            count.samples.append(downloads)
            count.baseline_samples.append(1)
            total.samples.append(seconds)
            total.baseline_samples.append(alone)
            log('dedup rep %d: %d downloads, %d calls in %.2fs, one alone '
                '%.2fs', rep + 1, downloads, calls, seconds, alone)

    def dedup_sample(self, size, calls, rep):
        size_gb = disk_gb(size)
        out = {}
        with self.fresh_image(ImageData(size), size) as shared, \
                self.fresh_image(ImageData(size), size) as single, \
                self.disks() as made:
            def simultaneous():
                errors = []

                def call():
                    try:
                        self.create(made, shared['id'], size_gb)
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
                out['alone'], _res, _mem = self.create(made, single['id'],
                                                       size_gb)
            for run in ([simultaneous, alone] if rep % 2 == 0
                        else [alone, simultaneous]):
                run()
            # Glance logs a request when it ends: let the count settle.
            counts = [self.glance.downloads(shared['id'])]
            while len(counts) < 4 or counts[-1] != counts[-3]:
                time.sleep(0.5)
                counts.append(self.glance.downloads(shared['id']))
        return counts[-1], out['total'], out['alone']

    def measure_memory(self):
        cfg = self.config
        for size in cfg.memory_sizes:
            key = size_text(size).replace(' ', '')
            fig = self.figure(
                'memory-%s' % key, 'peak RSS of the worker, %s download' %
                size_text(size), 'MiB', 'worker RSS before the call',
                Target('<', 200, '< 200 MiB', on='value'))
            if fig.samples:  # the download section measured it
                continue
            self.ensure_room(3 * size, 2 * size, 'memory %s' %
                             size_text(size))
            for rep in range(cfg.repetitions):
                out = self.attempt(
                    'memory %s rep %d' % (size_text(size), rep + 1),
                    lambda: self.memory_sample(size))
                self.record_memory(fig, size, out['memory'])
                self.plot_point('download, first disk (imaged)', size,
                                out['first'])
                log('memory %s rep %d: %.2fs, worker peak %.0f MiB',
                    size_text(size), rep + 1, out['first'],
                    fig.samples[-1] if fig.samples else float('nan'))

    def memory_sample(self, size):
        with self.fresh_image(ImageData(size), size) as image, \
                self.disks() as made:
            seconds, _res, memory = self.create(made, image['id'],
                                                disk_gb(size))
        return {'first': seconds, 'memory': memory}

    def derive(self):
        """Figures that compare imaged with itself."""
        clone = [self.figures.get('clone-%s' % size_text(s).replace(' ', ''))
                 for s in self.config.clone_sizes]
        if clone and clone[0] and clone[-1] and clone[-1].samples:
            fig = self.figure(
                'clone-flat', 'clone, %s image against %s' % (
                    size_text(self.config.clone_sizes[-1]),
                    size_text(self.config.clone_sizes[0])), 's',
                'imaged clone, %s' % size_text(self.config.clone_sizes[0]),
                Target('<=', 1.2, '<= 1.2x'))
            fig.samples, fig.baseline_samples = clone[-1].samples, \
                clone[0].samples
        sparse = self.figures.get('sparse')
        dense = self.figures.get('download-%s' % size_text(
            self.config.sparse[1]).replace(' ', ''))
        if sparse and dense and sparse.samples:
            fig = self.figure(
                'sparse-vs-dense', 'sparse %s against dense %s' % (
                    size_text(self.config.sparse[0]),
                    size_text(self.config.sparse[1])), 's',
                'imaged first disk, dense %s' %
                size_text(self.config.sparse[1]),
                Target('<=', 1.5, '<= 1.5x'))
            fig.samples, fig.baseline_samples = sparse.samples, dense.samples
        sizes = self.config.memory_sizes
        small, large = (self.figures.get('memory-%s' % size_text(s)
                                         .replace(' ', ''))
                        for s in (sizes[0], sizes[-1]))
        if small and large and small is not large and large.samples:
            fig = self.figure(
                'memory-flat', 'peak RSS of the worker, %s against %s' % (
                    size_text(sizes[-1]), size_text(sizes[0])), 'MiB',
                'peak RSS, %s' % size_text(sizes[0]),
                Target('<=', 1.2, '<= 1.2x'))
            fig.samples, fig.baseline_samples = large.samples, small.samples

    # -- the end -------------------------------------------------------------

    def cleanup(self):
        """Remove everything the run made, whatever state it is in."""
        if self.echo is not None:
            self.echo.stop()
        left = []
        with contextlib.suppress(Exception):
            self.agent.daemon.stop()
        try:
            left = self.ceph.remove_matching(
                sorted(self.instances | self.baseline_disks | self.glance.ids))
        except Exception as e:
            left = ['(%s)' % describe(e)]
        for image_id in list(self.glance.ids):
            try:
                self.glance.delete(image_id)
            except Exception as e:
                left.append('Glance image %s (%s)' % (image_id, describe(e)))
        if self.ceph.cluster is not None:
            with contextlib.suppress(Exception):
                self.ceph.cluster.shutdown()
        if left:
            log('could not remove: %s', ', '.join(left))
        return left


class QcowFile(io.FileIO):
    """The qcow2 file, opened anew for each upload."""

    def __init__(self, path):
        super().__init__(path, 'rb')
        self.size = os.path.getsize(path)


def describe(error):
    text = str(error).strip().splitlines()
    return '%s: %s' % (type(error).__name__, text[0] if text else '')


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
    m = report['machine']
    src = report['imaged']
    lines = [
        'imaged benchmark, %s, %s configuration, %s of %d repetitions' % (
            report['date'], report['configuration'], 'median',
            report['repetitions']),
        'machine: %d CPUs (%s), %.1f GiB RAM, Linux %s' % (
            m['nproc'], m['cpu_model'], m['mem_total_bytes'] / GiB,
            m['kernel']),
        'imaged: %s at %s%s' % (src['tree'], src['commit'],
                                ' + uncommitted changes in imaged/'
                                if src['uncommitted'] else ''),
        '']
    rows = [('figure', 'imaged', 'baseline', 'ratio', 'target', 'result')]
    for f in figures:
        result = {True: 'met', False: 'MISSED', None: '-'}[f.met]
        rows.append((f.title, number(f.value, f.unit),
                     '%s (%s)' % (number(f.baseline, f.unit),
                                  f.baseline_label),
                     '%.2fx' % f.ratio if f.ratio is not None else '-',
                     f.target.text if f.target else '(report only)',
                     result))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        lines.append('  '.join(c.ljust(w) for c, w in zip(row, widths))
                     .rstrip())
        if i == 0:
            lines.append('  '.join('-' * w for w in widths))
    notes = ['%s: %s' % (f.title, '; '.join(sorted(set(f.notes))))
             for f in figures if f.notes]
    notes += ['retried once: %s (%s)' % (r['what'], r['error'])
              for r in report['retries']]
    notes += ['FAILED: %s (%s)' % (e['what'], e['error'])
              for e in report['errors']]
    notes += ['skipped %s: %s' % (s['section'], s['reason'])
              for s in report['skipped']]
    if notes:
        lines += [''] + notes
    met = [f.met for f in figures if f.met is not None]
    lines += ['', 'targets met: %d of %d; took %.0f s' % (
        sum(met), len(met), report['duration_s'])]
    return '\n'.join(lines)


PLOT_STYLE = {
    'clone': 'tab:blue', 'download, first': 'tab:orange',
    'naive download': 'tab:orange', 'download, cache hit': 'tab:green',
    'sparse': 'tab:purple', 'qcow2': 'tab:brown'}


def draw_plot(report, path):
    try:
        import matplotlib
        matplotlib.use('Agg')
        from matplotlib import pyplot
    except ImportError:
        log('matplotlib is missing (pip install -r bench-requirements.txt): '
            'no plot')
        return False
    fig, (times, memory) = pyplot.subplots(
        1, 2, figsize=(13, 5.5), gridspec_kw={'width_ratios': [2, 1]})
    for name, points in sorted(report['series'].items()):
        sizes = sorted(int(s) for s in points)
        values = [statistics.median(points[str(s)]) for s in sizes]
        mib = [s / MiB for s in sizes]
        if name.startswith('peak RSS'):
            memory.plot(mib, [v / MiB for v in values], 'o-', label=name)
            continue
        colour = next((c for k, c in PLOT_STYLE.items()
                       if name.startswith(k)), None)
        baseline = 'baseline' in name
        times.plot(mib, values, 'o--' if baseline else 'o-', color=colour,
                   alpha=0.6 if baseline else 1.0, label=name)
    for axes in (times, memory):
        axes.set_xscale('log', base=2)
        axes.set_xlabel('image size (MiB)')
        axes.grid(True, which='both', alpha=0.3)
    times.set_yscale('log')
    times.set_ylabel('seconds (median)')
    times.set_title('time against image size')
    times.legend(fontsize=7)
    memory.axhline(200, color='red', linestyle=':', label='target')
    memory.set_ylabel('MiB')
    memory.set_title('peak RSS of the worker (download)')
    memory.legend(fontsize=7)
    fig.suptitle('imaged benchmark, %s, %d CPUs, %s' % (
        report['date'], report['machine']['nproc'],
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
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve_echo:
        return serve_echo(*args.serve_echo)
    config = dataclasses.replace(QUICK if args.quick else FULL)
    if args.repetitions:
        config.repetitions = args.repetitions
    tree = os.path.abspath(args.imaged_tree or REPO)
    if args.imaged_tree:
        os.environ['PYTHONPATH'] = os.pathsep.join(
            [tree] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    # SIGTERM ends the run like Ctrl-C: the cleanup below still runs.
    signal.signal(signal.SIGTERM, lambda *_a: sys.exit(143))
    run_id = uuid.uuid4().hex[:8]
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')
    base.configure_client()
    workdir = tempfile.mkdtemp(prefix='imaged-bench-', dir='/var/tmp')
    bench = None
    try:
        bench = Bench(config, workdir, run_id)
        bench.run(args.only.split(','))
    except (SampleFailed, NoRoom):
        pass
    except Exception as e:
        log('the benchmark could not run: %s', describe(e))
        traceback.print_exc()
        if bench is None:
            shutil.rmtree(workdir, ignore_errors=True)
            return 1
        bench.errors.append({'what': 'setup', 'error': describe(e),
                             'traceback': traceback.format_exc()})
    finally:
        left = bench.cleanup() if bench is not None else []
        os.makedirs(os.path.dirname(os.path.abspath(args.json)),
                    exist_ok=True)
        if bench is not None:
            with contextlib.suppress(FileNotFoundError):
                shutil.copy(bench.agent.daemon.log_file,
                            os.path.splitext(args.json)[0] + '-imaged.log')
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        'date': date, 'machine': machine_facts(),
        'imaged': source_facts(tree),
        'configuration': 'quick' if args.quick else 'full',
        'repetitions': config.repetitions,
        'config': dataclasses.asdict(config),
        'sections': args.only.split(','),
        'duration_s': time.monotonic() - STARTED,
        'figures': [f.as_dict() for f in bench.figures.values()],
        'series': {name: {str(size): values
                          for size, values in points.items()}
                   for name, points in bench.series.items()},
        'retries': bench.retries, 'errors': bench.errors,
        'skipped': bench.skipped, 'not_cleaned': left}
    with open(args.json, 'w') as f:
        json.dump(report, f, indent=1)
    os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
    plotted = draw_plot(report, args.plot)
    print(table(report, list(bench.figures.values())))
    print('\nraw figures: %s%s' % (
        args.json, '; plot: %s' % args.plot if plotted else ''))
    return 1 if bench.errors else 0


if __name__ == '__main__':
    sys.exit(main())
