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

"""``[image_cache] lazy_first_disk`` on the real stack: the first disk of a
new raw image from the file store is a clone of a lazy base (an RBD
import-only migration target whose source is the agent's loopback
source), published once copied and checked."""

import hashlib
import os
import re
import signal
import tempfile
import threading
import time

from oslo_utils import units

from imaged import exception
from imaged.image import lazy_source
from tests.functional import base
from tests.functional import test_root_disks
from tests.functional import test_worker_death
from tools.bench.machine import children


def remove_lazy_leftovers(ceph, image_id, size, port):
    """Remove what a test's lazy bases left (a quarantined base and its
    clone; a target a failed test left): librbd opens a target only
    through its source, so its image is served here meanwhile (zeros:
    its bytes no longer matter), unless an agent listens there still."""
    names = [n for n in ceph.names() if n.startswith(image_id + '_base.')]
    if not names:
        return
    source = lazy_source.LocalSource(port, 5)
    try:
        source.start()
    except exception.LazySourceUnavailable:
        source = None
    rbd = ceph.rbd
    with tempfile.TemporaryDirectory() as tmp, \
            ceph.cluster.open_ioctx(ceph.pool) as ioctx:
        try:
            if source is not None:
                source.serve(image_id, size)
                source.spool_maker(image_id, lambda: os.path.join(
                    tmp, 'spool'))(size).commit(size)
            for name in names:
                with rbd.Image(ioctx, name) as image:
                    for snap in list(image.list_snaps()):
                        image.set_snap(snap['name'])
                        children = list(image.list_children())
                        image.set_snap(None)
                        for _pool, child in children:
                            ceph.remove(child)
                        if image.is_protected_snap(snap['name']):
                            image.unprotect_snap(snap['name'])
                        image.remove_snap(snap['name'])
                try:
                    rbd.RBD().migration_abort(ioctx, name)
                except rbd.InvalidArgument:  # committed: a plain image
                    rbd.RBD().remove(ioctx, name)
        finally:
            if source is not None:
                source.forget(image_id)
                source.stop()


PORT_LAZY = base.free_port()


class LazyFirstDiskTest(base.FunctionalTestCase):

    daemon_options = {'image_cache': {'lazy_first_disk': 'true',
                                      'lazy_source_port': str(PORT_LAZY),
                                      'lazy_source_timeout': '10'}}

    def base_url(self, image_id):
        return 'rbd://%s/%s/%s_base/snap' % (
            base.stack()['CEPH_FSID'], base.stack()['CEPH_VMS_POOL'],
            image_id)

    def base_published(self, image_id):
        return '%s_base' % image_id in self.ceph.names()

    def test_first_disk_before_the_base_then_the_base_published(self):
        data = os.urandom(units.Mi) + bytes(8 * units.Mi) + \
            os.urandom(7 * units.Mi)
        image = self.glance.create(data, backend='local')
        self.addCleanup(self.ceph.remove, '%s_base' % image['id'])
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_LAZY)
        first = self.create_root_disk(image['id'])
        self.assertEqual('download', first['strategy'])
        self.assertIn('lazy base', ' '.join(first['timings']))
        # Cloned from the base under its partial name: not published yet.
        self.assertIn('%s_base.' % image['id'], first['parent'])
        self.assertTrue(first['parent'].endswith('.imaged-part/snap'),
                        first['parent'])
        self.assertEqual(data, self.ceph.read(first['name'], 0, len(data)))
        base.wait_for(lambda: self.base_published(image['id']), 60,
                      what='the lazy base to be published')
        name = '%s_base' % image['id']
        self.assertEqual(hashlib.sha256(data).hexdigest(), hashlib.sha256(
            self.ceph.read(name, 0, len(data))).hexdigest())
        # Committed: no migration left; the first disk reads the same.
        self.assertEqual(data, self.ceph.read(first['name'], 0, len(data)))
        second = self.create_root_disk(image['id'])
        self.assertEqual(self.base_url(image['id']), second['parent'])
        self.assertEqual(data, self.ceph.read(second['name'], 0, len(data)))
        self.assertEqual(1, self.glance.downloads(image['id']))
        self.assertNotIn('.imaged-part', ' '.join(
            n for n in self.ceph.names() if n.startswith(image['id'])))

    def test_a_hash_mismatch_quarantines_the_base(self):
        data = os.urandom(24 * units.Mi)
        image = self.glance.create(data, backend='local')
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_LAZY)
        # The store's bytes no longer match what Glance recorded.
        stored = os.path.join(base.STACK_DIR, 'glance', 'images',
                              image['id'])
        with open(stored, 'r+b') as f:
            f.seek(20 * units.Mi)
            f.write(b'tampered')
        tampered = data[:20 * units.Mi] + b'tampered' + \
            data[20 * units.Mi + 8:]
        try:
            first = self.create_root_disk(image['id'])
        except exception.ImageDataMismatch:
            pass  # the download was refused before the disk was made
        else:
            # The caller got Glance's bytes, as a clone of its snapshot
            # would have; the base behind it is never published.
            self.assertIn('.imaged-part', first['parent'])
            self.assertEqual(tampered, self.ceph.read(first['name'], 0,
                                                      len(data)))
        failed = 'Lazy base of image %s failed' % image['id']
        base.wait_for(lambda: failed in self.daemon.log(), 30,
                      what='the quarantine')
        # A later call gets no lazy disk: a checked download refuses it.
        self.assertRaises(exception.ImageDataMismatch, self.create_root_disk,
                          image['id'])
        self.assertFalse(self.base_published(image['id']))
        self.assertEqual(2, self.glance.downloads(image['id']))
        quarantined = [n for n in self.ceph.names()
                       if n.startswith(image['id'] + '_base.')]
        if quarantined:  # kept for the first disk, committed
            self.assertEqual(tampered, self.ceph.read(quarantined[0], 0,
                                                      len(data)))

    def test_a_refused_header_never_reaches_a_disk(self):
        data = os.urandom(8 * units.Mi)
        image = self.glance.create(data, backend='local')
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_LAZY)
        # Glance checked the upload: its stored bytes become a qcow2
        # image's after that (the same size).
        header = test_root_disks.qcow2_holding(b'x' * 512)[:units.Mi]
        stored = os.path.join(base.STACK_DIR, 'glance', 'images',
                              image['id'])
        with open(stored, 'r+b') as f:
            f.write(header)
        e = self.assertRaises(exception.ImageUnacceptable,
                              self.create_root_disk, image['id'])
        self.assertIn('qcow2', str(e))
        self.assertEqual([], [n for n in self.ceph.names()
                              if n.startswith(image['id'])])


PORT_KILLED = base.free_port()


class KilledAgentTest(base.FunctionalTestCase):

    # The killed worker's build lock runs out this soon (the minimum).
    daemon_options = {'image_cache': {'lazy_first_disk': 'true',
                                      'lazy_source_port': str(PORT_KILLED),
                                      'lazy_source_timeout': '10'},
                      'rbd': {'base_lock_duration': '5'}}

    def worker(self):
        kids = children(self.daemon.process.pid)
        self.assertEqual(1, len(kids), kids)
        return kids[0]

    def setUp(self):
        super().setUp()
        # The call the kill interrupts fails (no retry) once its
        # heartbeats stop.
        for option, value in (('rpc_response_timeout', 8),
                              ('rpc_retries', 0)):
            base.CONF.set_override(option, value)
            self.addCleanup(base.CONF.clear_override, option)

    def test_a_lazy_base_left_by_a_killed_agent_is_finished_next(self):
        data = test_worker_death.image_bytes(64 * units.Mi)
        image = self.glance.create(data, backend='local')
        name = '%s_base' % image['id']
        self.addCleanup(self.ceph.remove, name)
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_KILLED)
        worker = self.worker()
        mark = len(self.daemon.log())
        ready = re.compile(r'Lazy base %s/(%s\.\S+) of image' % (
            self.ceph.pool, name))
        result = {}

        def call():
            try:
                result['disk'] = self.create_root_disk(image['id'])
            except Exception as e:
                result['error'] = e
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        found = base.wait_for(
            lambda: ready.search(self.daemon.log()[mark:]), 60,
            interval=0.01, what='the lazy base')
        # Killed as the copy starts.
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        part = found.group(1)
        # Nothing is taken for a finished base.
        self.assertNotIn(name, self.ceph.names())
        # A VM's disk made from it before the kill (its source, the dead
        # agent's, served again by this test for the clone).
        vm_disk = '%s_disk' % self.new_instance()
        source = lazy_source.LocalSource(PORT_KILLED, 10)
        base.wait_for(lambda: self._started(source), 10,
                      what='the dead worker\'s port to be free')
        try:
            source.serve(image['id'], len(data))
            spool = source.spool_maker(
                image['id'], lambda: os.path.join(self.workdir, 'spool'))(0)
            spool.write(0, data)
            spool.commit(len(data))
            with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
                state = self.ceph.rbd.RBD().migration_status(ioctx, part)
                self.ceph.rbd.RBD().clone(ioctx, part, 'snap', ioctx,
                                          vm_disk)
        finally:
            source.forget(image['id'])
            source.stop()
        self.assertIn(state['state'], (2, 3, 4))  # not committed
        caller.join(60)
        self.assertFalse(caller.is_alive())
        self.assertIn('error', result)  # its worker died
        base.wait_for(lambda: self.worker() != worker, 30,
                      what='a new worker')
        # The dead worker's build lock runs out (5 s lease).
        time.sleep(max(0.0, 6 - (time.monotonic() - killed)))
        second = self.create_root_disk(image['id'])
        self.assertEqual(self.base_url(image['id']), second['parent'])
        self.assertIn('Resuming lazy base %s/%s' % (self.ceph.pool, part),
                      self.daemon.log())
        for disk in (vm_disk, second['name']):
            for offset in (0, len(data) // 2, len(data) - units.Mi):
                self.assertEqual(data[offset:offset + units.Mi],
                                 self.ceph.read(disk, offset, units.Mi))
        self.assertNotIn(part, self.ceph.names())
        # The leftover became the base: the VM's disk is its clone.
        self.assertEqual(name, self.ceph.parent(vm_disk)[1])

    @staticmethod
    def _started(source):
        try:
            source.start()
        except exception.LazySourceUnavailable:
            return False
        return True

    def base_url(self, image_id):
        return LazyFirstDiskTest.base_url(self, image_id)

    @staticmethod
    def _kill_quietly(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
