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

"""Functional tests: real imaged processes against the real local stack.

The stack (Ceph, RabbitMQ, Keystone, Glance) is started by
``tools/stack.sh start``; its facts are read from
``$IMAGED_STACK_DIR/stack.env``. Each test class starts its own imaged
daemon, with its own host name, state directory and configuration (Glance
with imaged's service user), and calls it only through
:class:`imaged.rpcapi.ImageAgentAPI`, as the stack's demo user: its images
are the demo project's, its token goes to the agent in the RPC context.
"""

import contextlib
import fcntl
import glob
import io
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import fixtures
from glanceclient import client as glance_client_module
from keystoneauth1.identity import v3 as ks_v3
from keystoneauth1 import session as ks_session
import oslo_messaging as messaging
import testtools

from imaged import conf as imaged_conf
from imaged import context
from imaged import rpc
from imaged import rpcapi

CONF = imaged_conf.CONF
STACK_DIR = os.environ.get('IMAGED_STACK_DIR', '/var/lib/imaged-stack')
IMAGED = os.path.join(os.path.dirname(sys.executable), 'imaged')


def load_stack_env(stack_dir=STACK_DIR):
    path = os.path.join(stack_dir, 'stack.env')
    if not os.path.exists(path):
        raise RuntimeError('%s is missing: run tools/stack.sh start (or '
                           'tools/run-tests.sh, which does)' % path)
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith('#') or '=' not in line:
                continue
            key, value = line.split('=', 1)
            if key.startswith('export '):
                key = key[len('export '):]
            env[key.strip()] = value.strip().strip('"\'')
    return env


STACK = None


def stack():
    global STACK
    if STACK is None:
        STACK = load_stack_env()
    return STACK


_SESSIONS = {}


def keystone_session(who='DEMO'):
    """A keystoneauth session of a stack user: ``DEMO`` (the tests' user,
    member of the demo project) or ``IMAGED`` (the agent's service user).

    One per user and process; keystoneauth renews the token before it
    expires.
    """
    if who not in _SESSIONS:
        env = stack()
        auth = ks_v3.Password(
            auth_url=env['OS_AUTH_URL'],
            username=env['%s_USER' % who],
            password=env['%s_PASSWORD' % who],
            project_name=env['%s_PROJECT' % who],
            user_domain_name=env['OS_USER_DOMAIN_NAME'],
            project_domain_name=env['OS_PROJECT_DOMAIN_NAME'])
        _SESSIONS[who] = ks_session.Session(auth=auth, timeout=30)
    return _SESSIONS[who]


def glance_client(who='DEMO', url=None):
    """glanceclient as a stack user, Glance found in Keystone's catalog
    (or at ``url``: the stack's file-only Glance)."""
    return glance_client_module.Client(
        '2', endpoint=url, session=keystone_session(who), interface='public',
        region_name=stack()['OS_REGION_NAME'])


def user_context(who='DEMO'):
    """What a caller sends over RPC: a stack user's (current) token, and
    the project and user it is of (imaged refuses claims that are not the
    token's). ``DEMO`` is the tests' user; ``IMAGED``, the agent's service
    user, stands for a conductor's or an operator's service user: its
    ``service`` and ``admin`` roles let it act on any disk and list the
    cache."""
    sess = keystone_session(who)
    return context.RequestContext(
        user_id=sess.get_user_id(), project_id=sess.get_project_id(),
        auth_token=sess.get_token())


def service_context():
    """A service user's RPC context (see :func:`user_context`)."""
    return user_context('IMAGED')


def glance_options(env=None):
    """imaged's ``[glance]`` for the stack: its service user (password)."""
    env = env or stack()
    return {'auth_type': 'password',
            'auth_url': env['OS_AUTH_URL'],
            'username': env['IMAGED_USER'],
            'password': env['IMAGED_PASSWORD'],
            'project_name': env['IMAGED_PROJECT'],
            'user_domain_name': env['OS_USER_DOMAIN_NAME'],
            'project_domain_name': env['OS_PROJECT_DOMAIN_NAME'],
            'region_name': env['OS_REGION_NAME'],
            'endpoint_override': env['GLANCE_URL']}


def free_port():
    """A loopback TCP port nothing listens on now (an agent's
    ``lazy_source_port``)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, interval=0.2, what='condition'):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %ss waiting for %s' %
                                 (timeout, what))
        time.sleep(interval)


class PoolSweeps(fixtures.Fixture):
    """Serialises tests that plant leftovers of other hosts that look
    abandoned (``shared``) with the one that runs a pool cleanup host
    (``exclusive``: it removes every such leftover, on any test's behalf).
    A file lock, so it holds across stestr's workers; one per stack (a
    run against another stack on the machine shares no pool with this one)."""

    PATH = os.path.join(STACK_DIR, 'functional-sweeps.lock')

    def __init__(self, exclusive=False):
        super().__init__()
        self.mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH

    def _setUp(self):
        fd = os.open(self.PATH, os.O_RDWR | os.O_CREAT, 0o666)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, self.mode)
        self.addCleanup(fcntl.flock, fd, fcntl.LOCK_UN)


class Daemon:
    """One ``imaged`` process with its own configuration and state."""

    def __init__(self, workdir, host, options=None):
        self.workdir = workdir
        self.host = host
        self.state_path = os.path.join(workdir, 'state')
        self.config_file = os.path.join(workdir, 'imaged.conf')
        self.log_file = os.path.join(workdir, 'imaged.log')
        self.process = None
        env = stack()
        sections = {
            'DEFAULT': {'host': host,
                        'transport_url': env['TRANSPORT_URL'],
                        'state_path': self.state_path,
                        'debug': 'true',
                        'log_file': self.log_file,
                        'graceful_shutdown_timeout': '60'},
            'rbd': {'ceph_conf': env['CEPH_CONF'],
                    'user': env['CEPH_IMAGED_USER'],
                    'keyring': env['CEPH_IMAGED_KEYRING'],
                    'pool': env['CEPH_VMS_POOL'],
                    'connect_timeout': '5'},
            'glance': dict(glance_options(env),
                           num_retries='1', timeout='20',
                           progress_interval='1'),
            'image_cache': {'manager_interval': '3600'},
        }
        for group, values in (options or {}).items():
            sections.setdefault(group, {}).update(values)
        with open(self.config_file, 'w') as f:
            for group, values in sections.items():
                f.write('[%s]\n' % group)
                for key, value in values.items():
                    f.write('%s = %s\n' % (key, value))

    # Where kernel.core_pattern is a plain name, a worker's core lands in
    # the daemon's working directory: its workdir.
    core_dumps = False

    def start(self):
        def allow_cores():
            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,
                                                      resource.RLIM_INFINITY))
        self.process = subprocess.Popen(
            [IMAGED, '--config-file', self.config_file],
            stdout=subprocess.DEVNULL, stderr=open(
                os.path.join(self.workdir, 'stderr.log'), 'ab'),
            cwd=self.workdir, start_new_session=True,
            preexec_fn=allow_cores if self.core_dumps else None)
        return self

    def fault_files(self):
        """Python stacks of this daemon's processes at a fatal signal
        (imaged.crashes), not yet reported: {path: text}."""
        found = {}
        for path in glob.glob(glob.escape(self.log_file) + '.fault.*'):
            with contextlib.suppress(OSError), open(path) as f:
                found[path] = f.read()
        return found

    def signal(self, signum):
        os.kill(self.process.pid, signum)

    def stop(self, timeout=90):
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass

    def kill(self):
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)

    def contract_breaches(self):
        """The log's lines that say a call answered an error its contract
        (``imaged.rpcapi.METHODS``) does not name."""
        return [line for line in self.log().splitlines()
                if 'does not name: please report this bug' in line]

    def log(self):
        try:
            with open(self.log_file) as f:
                return f.read()
        except FileNotFoundError:
            return ''


class Glance:
    """What a test needs of the real Glance: images it creates and removes."""

    def __init__(self, test, url=None):
        self.test = test
        self.client = glance_client(url=url)

    def create(self, data, disk_format='raw', backend='ceph',
               container_format='bare', **props):
        """An active image of ``data`` in ``backend`` (None: Glance's
        default store)."""
        image = self.client.images.create(
            name='imaged-test-%s' % uuid.uuid4().hex[:8],
            disk_format=disk_format, container_format=container_format,
            **props)
        self.test.addCleanup(self.delete, image['id'])
        self.client.images.upload(image['id'], io.BytesIO(data),
                                  image_size=len(data), backend=backend)
        return self.client.images.get(image['id'])

    def rbd_location(self, image_id, store='ceph'):
        """The image's location in ``store``, as imaged's service user reads
        it (``GET /v2/images/{id}/locations``: records show none)."""
        resp = keystone_session('IMAGED').get(
            '%s/v2/images/%s/locations' % (stack()['GLANCE_URL'], image_id))
        [url] = [loc['url'] for loc in resp.json()
                 if loc['metadata'].get('store') == store]
        return url

    def delete(self, image_id):
        try:
            self.client.images.delete(image_id)
        except Exception:  # already gone
            pass

    def downloads(self, image_id):
        """How many times Glance served the image's data."""
        pattern = re.compile(r'GET /v2/images/%s/file' % image_id)
        with open(stack()['GLANCE_ACCESS_LOG'], errors='replace') as f:
            return sum(1 for line in f if pattern.search(line))


def random_raw(size):
    """``size`` random bytes Glance takes for a raw image: random bytes end
    their first sector with the MBR boot signature (55 AA) once in 65,536
    uploads, and Glance's format inspector then refuses them as a broken
    GPT/MBR disk (415 "Image failed safety checks", seen once)."""
    data = bytearray(os.urandom(size))
    if data[510:512] == b'\x55\xaa':
        data[510] = 0
    return bytes(data)


class Ceph:
    """Read-only checks on the pools, as the admin user."""

    def __init__(self):
        import rados
        import rbd
        self.rados, self.rbd = rados, rbd  # as imaged's connection's
        env = stack()
        self.cluster = rados.Rados(conffile=env['CEPH_CONF'],
                                   conf={'keyring': env['CEPH_ADMIN_KEYRING']})
        self.cluster.connect(timeout=10)
        self.pool = env['CEPH_VMS_POOL']

    def close(self):
        self.cluster.shutdown()

    def remove_unwatched(self, name, timeout=90):
        """Remove ``name`` once no client watches it (a killed process's
        watch lapses in ~30 s)."""
        def removed():
            try:
                self.remove(name)
            except self.rbd.ImageBusy:
                return False
            return True
        wait_for(removed, timeout, interval=1,
                 what='%s to have no watcher' % name)

    def names(self, pool=None):
        with self.cluster.open_ioctx(pool or self.pool) as ioctx:
            return self.rbd.RBD().list(ioctx)

    def read(self, name, offset, length, pool=None):
        with self.cluster.open_ioctx(pool or self.pool) as ioctx:
            with self.rbd.Image(ioctx, name, read_only=True) as image:
                return image.read(offset, length)

    def size(self, name, pool=None):
        with self.cluster.open_ioctx(pool or self.pool) as ioctx:
            with self.rbd.Image(ioctx, name, read_only=True) as image:
                return image.size()

    def write(self, name, offset, data, pool=None):
        """Write as a guest would."""
        with self.cluster.open_ioctx(pool or self.pool) as ioctx:
            with self.rbd.Image(ioctx, name) as image:
                image.write(data, offset)

    def trash(self, pool=None):
        """Names of the images in the pool's RBD trash."""
        with self.cluster.open_ioctx(pool or self.pool) as ioctx:
            return [e['name'] for e in self.rbd.RBD().trash_list(ioctx)]

    def parent(self, name, pool=None):
        """``(pool, image, snapshot)`` of a clone's parent, or None."""
        with self.cluster.open_ioctx(pool or self.pool) as ioctx:
            with self.rbd.Image(ioctx, name, read_only=True) as image:
                try:
                    return image.parent_info()
                except self.rbd.ImageNotFound:
                    return None

    def remove(self, name, pool=None):
        """Remove an image, and first its snapshots (a base image's)."""
        with self.cluster.open_ioctx(pool or self.pool) as ioctx:
            try:
                try:
                    self.rbd.RBD().remove(ioctx, name)
                except self.rbd.ImageHasSnapshots:
                    with self.rbd.Image(ioctx, name) as image:
                        for snap in list(image.list_snaps()):
                            if image.is_protected_snap(snap['name']):
                                image.unprotect_snap(snap['name'])
                            image.remove_snap(snap['name'])
                    self.rbd.RBD().remove(ioctx, name)
            except self.rbd.ImageNotFound:
                pass


def configure_client():
    """The test process is a caller: it only needs the transport."""
    if not getattr(configure_client, 'done', False):
        CONF([], project='imaged', default_config_files=[])
        messaging.get_rpc_transport(CONF)  # registers the transport options
        CONF.set_override('transport_url', stack()['TRANSPORT_URL'])
        CONF.set_override('long_rpc_timeout', 600)
        rpc.cleanup()
        configure_client.done = True


class FunctionalTestCase(testtools.TestCase):
    """Starts one imaged for the class; tests call it over RabbitMQ."""

    daemon_options = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        configure_client()
        cls.workdir = tempfile.mkdtemp(prefix='imaged-func-')
        cls.host = 'func-%s' % uuid.uuid4().hex[:8]
        cls.daemon = Daemon(cls.workdir, cls.host, cls.daemon_options)
        cls.daemon.start()
        cls.api = rpcapi.ImageAgentAPI(CONF)
        cls.ctxt = user_context()
        try:
            cls.wait_until_serving(cls.api, cls.ctxt, cls.host, cls.daemon)
        except Exception:
            cls.daemon.kill()
            raise
        cls.ceph = Ceph()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()
        cls.ceph.close()
        breaches = cls.daemon.contract_breaches()
        shutil.rmtree(cls.workdir, ignore_errors=True)
        super().tearDownClass()
        if breaches:
            raise AssertionError('the agent answered errors its calls\' '
                                 'contracts do not name:\n' +
                                 '\n'.join(breaches))

    @staticmethod
    def wait_until_serving(api, ctxt, host, daemon, timeout=90):
        # A call sent before the agent's queue exists is lost: its caller
        # waits out the whole call timeout. While the agent starts (a few
        # seconds, more on a busy machine) ask often with a short timeout;
        # after that, with a long one, so that a slow answer comes too.
        fast = api.client.prepare(server=host, timeout=1)
        patient = api.client.prepare(server=host, timeout=15)
        started = time.monotonic()

        def answers():
            if daemon.process.poll() is not None:
                raise AssertionError('imaged exited with %s:\n%s' % (
                    daemon.process.returncode, daemon.log()[-3000:]))
            client = fast if time.monotonic() - started < 20 else patient
            try:
                return client.call(ctxt, 'get_capabilities')
            except messaging.MessagingTimeout:
                return None
        return wait_for(answers, timeout, interval=0.1,
                        what='imaged %s to answer' % host)

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(600, gentle=True))
        self.ctxt = user_context()
        self.glance = Glance(self)

    def new_instance(self):
        instance_uuid = str(uuid.uuid4())
        self.addCleanup(self.ceph.remove, '%s_disk' % instance_uuid)
        return instance_uuid

    def create_root_disk(self, image_id, size_gb=1, instance_uuid=None):
        instance_uuid = instance_uuid or self.new_instance()
        return self.api.create_root_disk(self.ctxt, self.host, instance_uuid,
                                         image_id, size_gb)

    def cached_ids(self):
        return [e['image_id'] for e in
                self.api.list_cached_images(service_context(), self.host)]
