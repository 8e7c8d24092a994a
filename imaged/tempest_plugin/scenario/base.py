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

"""What every scenario test needs: the deployment, seen as a caller sees it.

A test talks to the agent only through :class:`imaged.rpcapi.ImageAgentAPI`
(as a conductor would), to Glance only through Tempest's images client, as
the test class's own user (Tempest's ``primary`` credentials), and to Ceph
only to check (and, when a test failed half-way, to remove) what it
created. Everything comes from tempest.conf (see
:mod:`imaged.tempest_plugin.config`). Each test creates its own images and
instances, removes them even when it fails, and can run in parallel with
the others.
"""

import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
import time
import uuid

import fixtures
from oslo_config import cfg
from oslo_messaging import opts as messaging_opts
from tempest import config
from tempest.lib import exceptions as lib_exc
from tempest import test
from testtools import content

from imaged import rpcapi
from imaged.tempest_plugin.scenario import backends

CONF = config.CONF
PARTIAL_SUFFIX = '.imaged-part'
# Held shared by every scenario test and exclusively by each fault test, so
# that even one mixed parallel run never disturbs a test with a fault. One
# per deployment: tools/scenario-run.sh names one in the stack's directory
# (runs against other stacks on the machine disturb nothing of this one).
FAULT_LOCK = os.environ.get('IMAGED_SCENARIO_FAULT_LOCK') or os.path.join(
    tempfile.gettempdir(), 'imaged-scenario.lock')


def disk_name(instance_uuid):
    return '%s_disk' % instance_uuid


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def wait_for(predicate, timeout, interval=0.5, what='a condition'):
    """The first true value of ``predicate()``, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError('waited %ss for %s' % (timeout, what))
        time.sleep(interval)


def rpc_client_conf(options):
    """imaged's client options, the broker and timeouts from ``[imaged]``.

    oslo.messaging reads some of its options from oslo.config's global
    configuration only: Tempest's, where importing imaged registered
    imaged's options too.
    """
    conf = cfg.CONF
    for group, opts in messaging_opts.list_opts():
        conf.register_opts(opts, group=group)
    conf.set_override('transport_url', options.transport_url)
    conf.set_override('rpc_response_timeout', options.rpc_response_timeout)
    conf.set_override('long_rpc_timeout', options.long_rpc_timeout)
    return conf


class Deployment:
    """The agent and its Ceph cluster, once per test process."""

    _instance = None
    _lock = threading.Lock()

    def __init__(self):
        self.host = CONF.imaged.host
        self.api = rpcapi.ImageAgentAPI(rpc_client_conf(CONF.imaged))
        self.ceph = backends.Ceph(CONF.imaged_ceph)

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance


class ScenarioTestCase(test.BaseTestCase):
    """Base of every scenario test."""

    # primary: the caller, owner of the test's images and disks; admin:
    # an operator's token, for the calls that need it (list_cached_images).
    credentials = ['primary', 'admin']
    exclusive = False  # fault tests hold the fault lock alone

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.service_available.imaged:
            raise cls.skipException('[service_available] imaged is false')
        if not CONF.service_available.glance:
            raise cls.skipException('[service_available] glance is false')

    @classmethod
    def setup_clients(cls):
        super().setup_clients()
        cls.glance = backends.Glance(cls.os_primary.image_client_v2)

    @classmethod
    def resource_setup(cls):
        super().resource_setup()
        for option in ('host', 'transport_url'):
            if not getattr(CONF.imaged, option):
                raise lib_exc.InvalidConfiguration(
                    '[imaged] %s is not set in tempest.conf, and '
                    '[service_available] imaged is true' % option)
        cls.conf = CONF
        cls.deployment = Deployment.get()
        cls.api = cls.deployment.api
        cls.host = cls.deployment.host
        cls.ceph = cls.deployment.ceph

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(300, gentle=True))
        self._hold_fault_lock()
        self.ctxt = self.glance.request_context()
        self.marker = 'scenario-%s' % uuid.uuid4().hex[:8]

    def operator_context(self):
        """An admin's RPC context: list_cached_images needs the admin or
        service role."""
        return backends.request_context(self.os_admin.auth_provider)

    def _hold_fault_lock(self):
        fd = os.open(FAULT_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)

    # -- Glance ---------------------------------------------------------------

    def upload(self, data, disk_format='raw', store='download',
               container_format='bare', **props):
        """A new active image holding ``data``, deleted after the test."""
        # Each attempt with a fresh image: a failed one may be half-saved.
        for attempt in backends.glance_retrying(wait=False):
            image = backends.glance_call(
                self.glance.client.create_image,
                name='%s-%s' % (self.marker, self.id().rsplit('.', 1)[-1]),
                disk_format=disk_format, container_format=container_format,
                **props)
            self.addCleanup(self.delete_image, image['id'])
            with attempt:
                self.glance.upload(image['id'], data,
                                   store=self.glance.store(store))
        return backends.glance_call(self.glance.client.show_image, image['id'])

    def new_image_record(self, disk_format='raw', **props):
        """An image with no data (status ``queued``), deleted after."""
        image = backends.glance_call(
            self.glance.client.create_image, name='%s-queued' % self.marker,
            disk_format=disk_format, container_format='bare', **props)
        self.addCleanup(self.delete_image, image['id'])
        return image

    def delete_image(self, image_id):
        try:
            backends.glance_call(self.glance.client.delete_image, image_id)
        except lib_exc.NotFound:
            pass
        except lib_exc.BadRequest:
            # A retry after a delete that did happen: "deleted to deleted".
            with contextlib.suppress(lib_exc.NotFound):
                if backends.glance_call(self.glance.client.show_image,
                                        image_id)['status'] != 'deleted':
                    raise
        finally:
            # What the agent keeps in Ceph about a deleted image is of no
            # use to anybody; the agent would remove it later, we do now.
            for name in self.ceph.names_with(image_id):
                self.ceph.remove(name)

    # -- the agent ------------------------------------------------------------

    def caller(self, timeout=None):
        """A raw RPC client for calls ImageAgentAPI would not send."""
        return self.api.client.prepare(
            server=self.host, timeout=timeout or CONF.imaged.call_timeout)

    def new_instance(self, host=None):
        """A new instance uuid whose disk (made by the agent of ``host``)
        is removed after the test."""
        instance_uuid = str(uuid.uuid4())
        self.addCleanup(self.remove_disk, instance_uuid, host)
        return instance_uuid

    def remove_disk(self, instance_uuid, host=None):
        """Delete as a caller would; then make sure nothing stays."""
        # A dead agent sends no heartbeat: give up on it quickly.
        client = self.api.client.prepare(
            server=host or self.host, timeout=CONF.imaged.call_timeout,
            call_monitor_timeout=10)
        try:
            client.call(self.ctxt, 'delete_root_disk',
                        instance_uuid=instance_uuid)
        except Exception as e:  # the test failed; Ceph has the last word
            self.addDetail('cleanup-%s' % instance_uuid,
                           content.text_content(repr(e)))
        for name in self.ceph.names_with(instance_uuid):
            self.ceph.remove(name)

    def create_root_disk(self, image_id, size_gb=1, instance_uuid=None):
        instance_uuid = instance_uuid or self.new_instance()
        return self.api.create_root_disk(self.ctxt, self.host, instance_uuid,
                                         image_id, size_gb)

    def cached(self, host=None):
        """``image_id -> entry`` of the agent's base cache."""
        entries = self.api.list_cached_images(self.operator_context(),
                                              host or self.host)
        return {e['image_id']: e for e in entries}

    # -- checks ---------------------------------------------------------------

    def assertDiskHolds(self, name, data, size_bytes=None):
        """The disk starts with ``data`` (and has ``size_bytes``)."""
        if size_bytes is not None:
            self.assertEqual(size_bytes, self.ceph.size(name))
        self.assertEqual(sha256(data),
                         sha256(self.ceph.read(name, 0, len(data))),
                         'disk %s does not hold the image bytes' % name)

    def assertNoDisk(self, instance_uuid):
        """No disk, finished or partial, exists for the instance."""
        self.assertEqual([], self.ceph.names_with(instance_uuid))

    def assertNotCached(self, image_id, host=None):
        self.assertNotIn(image_id, self.cached(host))

    def assertDownloads(self, expected, image_id):
        """Glance served the image ``expected`` times (if it can tell)."""
        served = self.glance.downloads(image_id)
        if served is not None:
            self.assertEqual(expected, served,
                             'Glance served image %s %d times' %
                             (image_id, served))
