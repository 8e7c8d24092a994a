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
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

from oslo_utils import units

from imaged import exception
from imaged.image import lazy_source
from imaged.storage import base_state
from imaged.storage import guards
from imaged.storage import lazy as rbd_lazy
from imaged.storage import partial
from imaged.storage import partial_names
from tests.functional import base
from tests.functional import test_root_disks
from tests.functional import test_worker_death
from tools.bench.machine import children


def qcow2_of(disk_bytes):
    """``qemu-img convert -O qcow2`` of a disk holding ``disk_bytes``."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, qcow2 = os.path.join(tmp, 'raw'), os.path.join(tmp, 'qcow2')
        with open(raw, 'wb') as f:
            f.write(disk_bytes)
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                        raw, qcow2], check=True, capture_output=True)
        with open(qcow2, 'rb') as f:
            return f.read()


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
        data = base.random_raw(units.Mi) + bytes(8 * units.Mi) + \
            base.random_raw(7 * units.Mi)
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
        data = base.random_raw(24 * units.Mi)
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

    def test_a_disk_opened_before_the_publication_reads_right_after(self):
        # Data in every object: a read the source does not answer would
        # not pass for a hole.
        data = base.random_raw(32 * units.Mi)
        image = self.glance.create(data, backend='local')
        self.addCleanup(self.ceph.remove, '%s_base' % image['id'])
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_LAZY)
        first = self.create_root_disk(image['id'])
        self.assertTrue(first['parent'].endswith('.imaged-part/snap'))
        rbd = self.ceph.rbd
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx, \
                rbd.Image(ioctx, first['name'], read_only=True) as vm:
            # A VM's librbd, open before the commit, then idle: it keeps
            # reading the target's snapshot through the agent's source.
            self.assertEqual(data[:4096], vm.read(0, 4096))
            base.wait_for(lambda: self.base_published(image['id']), 60,
                          what='the lazy base to be published')
            for offset in range(units.Mi, len(data), 7 * units.Mi):
                self.assertEqual(data[offset:offset + 32768],
                                 vm.read(offset, 32768), offset)
            # And from an agent started since (a new worker).
            worker = KilledAgentTest.worker(self)
            os.kill(worker, signal.SIGKILL)
            base.wait_for(lambda: children(self.daemon.process.pid) not in (
                [], [worker]), 60, what='a new worker')
            self.wait_until_serving(self.api, self.ctxt, self.host,
                                    self.daemon)
            for offset in range(3 * units.Mi, len(data), 7 * units.Mi):
                self.assertEqual(data[offset:offset + 32768],
                                 vm.read(offset, 32768), offset)

    def test_calls_of_this_host_share_its_lazy_base(self):
        data = base.random_raw(units.Mi) + bytes(90 * units.Mi) + \
            base.random_raw(5 * units.Mi)
        image = self.glance.create(data, backend='local')
        self.addCleanup(self.ceph.remove, '%s_base' % image['id'])
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_LAZY)
        start, results = threading.Barrier(4), []

        def call():
            start.wait(30)
            results.append(self.create_root_disk(image['id']))
        callers = [threading.Thread(target=call) for _i in range(4)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(300)
        self.assertEqual(4, len(results))
        # Those that came before its publication cloned the same target
        # (the copy and the download wait for the first clone: at least
        # two come before); those after, the base.
        parents = [r['parent'] for r in results]
        shared = [p for p in parents if p.endswith('.imaged-part/snap')]
        self.assertGreaterEqual(len(shared), 2, parents)
        self.assertEqual(1, len(set(shared)), parents)
        base.wait_for(lambda: self.base_published(image['id']), 60,
                      what='the lazy base to be published')
        for result in results:
            for offset in (0, len(data) - 5 * units.Mi):
                self.assertEqual(data[offset:offset + units.Mi],
                                 self.ceph.read(result['name'], offset,
                                                units.Mi))
        self.assertEqual(1, self.glance.downloads(image['id']))

    def test_a_qcow2_image_gets_a_lazy_first_disk(self):
        disk_bytes = base.random_raw(units.Mi) + bytes(20 * units.Mi) + \
            base.random_raw(3 * units.Mi)
        data = qcow2_of(disk_bytes)
        image = self.glance.create(data, disk_format='qcow2',
                                   backend='local')
        self.addCleanup(self.ceph.remove, '%s_base' % image['id'])
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_LAZY)
        first = self.create_root_disk(image['id'])
        self.assertIn('lazy base', ' '.join(first['timings']))
        self.assertTrue(first['parent'].endswith('.imaged-part/snap'),
                        first['parent'])
        # librbd reads the guest's bytes through the qcow2 source.
        self.assertEqual(disk_bytes, self.ceph.read(first['name'], 0,
                                                    len(disk_bytes)))
        base.wait_for(lambda: self.base_published(image['id']), 60,
                      what='the lazy base to be published')
        name = '%s_base' % image['id']
        self.assertEqual(len(disk_bytes), self.ceph.size(name))
        self.assertEqual(disk_bytes, self.ceph.read(name, 0,
                                                    len(disk_bytes)))
        second = self.create_root_disk(image['id'])
        self.assertEqual(self.base_url(image['id']), second['parent'])
        self.assertEqual(disk_bytes, self.ceph.read(second['name'], 0,
                                                    len(disk_bytes)))
        self.assertEqual(1, self.glance.downloads(image['id']))

    def test_a_qcow2_with_a_backing_file_never_reaches_a_disk(self):
        data = qcow2_of(base.random_raw(2 * units.Mi))
        image = self.glance.create(data, disk_format='qcow2',
                                   backend='local')
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_LAZY)
        # Glance checked the upload; its stored header then names a
        # backing file (the same size).
        with tempfile.TemporaryDirectory() as tmp:
            backed = os.path.join(tmp, 'backed')
            subprocess.run(['qemu-img', 'create', '-f', 'qcow2', '-b',
                            '/etc/hostname', '-F', 'raw', backed, '8M'],
                           check=True, capture_output=True)
            with open(backed, 'rb') as f:
                header = f.read(65536)
        self.assert_header_refused(image['id'], header, 'backing')

    def test_a_refused_header_never_reaches_a_disk(self):
        data = base.random_raw(8 * units.Mi)
        image = self.glance.create(data, backend='local')
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_LAZY)
        # Glance checked the upload: its stored bytes become a qcow2
        # image's after that (the same size).
        header = test_root_disks.qcow2_holding(b'x' * 512)[:units.Mi]
        self.assert_header_refused(image['id'], header, 'qcow2')

    def assert_header_refused(self, image_id, header, reason):
        """Glance's stored bytes of ``image_id`` begin with ``header``
        (after Glance checked the upload): its first disk is refused,
        naming ``reason``, with nothing left in the pool."""
        stored = os.path.join(base.STACK_DIR, 'glance', 'images', image_id)
        with open(stored, 'r+b') as f:
            f.write(header)
        e = self.assertRaises(exception.ImageUnacceptable,
                              self.create_root_disk, image_id)
        self.assertIn(reason, str(e))
        self.assertEqual([], [n for n in self.ceph.names()
                              if n.startswith(image_id)])


PORT_PLAIN = base.free_port()


class PlainBaseTest(base.FunctionalTestCase):
    """``[image_cache] lazy_plain_base``: the base other hosts clone is
    written from the same download and published as it ends; the lazy
    base is kept only for the disk cloned from it."""

    daemon_options = {'image_cache': {'lazy_first_disk': 'true',
                                      'lazy_plain_base': 'true',
                                      'lazy_source_port': str(PORT_PLAIN),
                                      'lazy_source_timeout': '10'}}

    def test_the_base_is_the_download_s_the_lazy_one_stays_for_its_disk(
            self):
        data = base.random_raw(units.Mi) + bytes(8 * units.Mi) + \
            base.random_raw(23 * units.Mi)
        image = self.glance.create(data, backend='local')
        name = '%s_base' % image['id']
        self.addCleanup(self.ceph.remove, name)
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_PLAIN)
        first = self.create_root_disk(image['id'])
        self.assertTrue(first['parent'].endswith('.imaged-part/snap'),
                        first['parent'])
        kept = first['parent'].split('/')[-2]
        self.assertEqual(data, self.ceph.read(first['name'], 0, len(data)))
        base.wait_for(lambda: name in self.ceph.names(), 60,
                      what='the base to be published')
        # The download's own: never a migration target, no lazy mark.
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            self.assertEqual({}, guards.header_values(
                self.ceph, ioctx, name,
                (guards.METADATA_PREFIX + rbd_lazy.LAZY_KEY,
                 guards.MIGRATION_KEY)))
        self.assertEqual(data, self.ceph.read(name, 0, len(data)))
        second = self.create_root_disk(image['id'])
        self.assertEqual(LazyFirstDiskTest.base_url(self, image['id']),
                         second['parent'])
        # The lazy base: copied, committed, never published, kept for the
        # first disk (the pool's cleanup removes it after that disk).
        base.wait_for(lambda: list(LeftStatesTest.marks(self, kept)) == [
            guards.METADATA_PREFIX + rbd_lazy.QUARANTINED_KEY], 60,
            what='the lazy base to be committed and kept')
        self.assertEqual(kept, self.ceph.parent(first['name'])[1])
        self.assertEqual(data, self.ceph.read(first['name'], 0, len(data)))
        self.assertEqual(data, self.ceph.read(second['name'], 0, len(data)))
        self.assertEqual(1, self.glance.downloads(image['id']))
        self.assertIn('published in', self.daemon.log())
        self.assertIn('from its download (lazy_plain_base)',
                      self.daemon.log())


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
        self.addCleanup(self.ceph.remove_unwatched, name)
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
        part = found.group(1)
        # A VM's disk made from it before the kill (through the agent's
        # source, which serves it now).
        vm_disk = '%s_disk' % self.new_instance()
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            self.ceph.rbd.RBD().clone(ioctx, part, 'snap', ioctx, vm_disk)
            state = self.ceph.rbd.RBD().migration_status(ioctx, part)
        # Killed as the copy starts.
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        # Nothing is taken for a finished base.
        self.assertNotIn(name, self.ceph.names())
        self.assertIn(state['state'], (2, 3, 4))  # not committed
        caller.join(60)
        self.assertFalse(caller.is_alive())
        # Its worker died, or it had answered just before (its disk is a
        # clone of the same target, which must then read right too).
        disks = [vm_disk]
        if 'disk' in result:
            disks.append(result['disk']['name'])
            self.addCleanup(self.ceph.remove_unwatched, disks[-1])
        base.wait_for(lambda: self.worker() != worker, 30,
                      what='a new worker')
        # The dead worker's build lock runs out (5 s lease).
        time.sleep(max(0.0, 6 - (time.monotonic() - killed)))
        second = self.create_root_disk(image['id'])
        self.assertEqual(self.base_url(image['id']), second['parent'])
        self.assertIn('Resuming lazy base %s/%s' % (self.ceph.pool, part),
                      self.daemon.log())
        for disk in disks + [second['name']]:
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


PORT_LEFT = base.free_port()


class LeftStatesTest(base.FunctionalTestCase):
    """A lazy base left in each state a killed agent can leave it in,
    planted on the real cluster under this agent's partial name, and what
    the agent makes of it: at its next call of the image, or at its
    start-up."""

    daemon_options = {'image_cache': {'lazy_first_disk': 'true',
                                      'lazy_source_port': str(PORT_LEFT),
                                      'lazy_source_timeout': '10'}}

    def setUp(self):
        super().setUp()
        # Planted with the agent stopped: it listens on the source's port
        # from its start.
        self.daemon.stop()
        self.addCleanup(self.start_agent)

    def start_agent(self):
        if self.daemon.process.poll() is None:
            return
        self.daemon.start()
        self.wait_until_serving(self.api, self.ctxt, self.host, self.daemon)

    def image(self, size=8 * units.Mi):
        data = test_worker_death.image_bytes(size)
        image = self.glance.create(data, backend='local')
        self.addCleanup(self.ceph.remove, '%s_base' % image['id'])
        self.addCleanup(remove_lazy_leftovers, self.ceph, image['id'],
                        len(data), PORT_LEFT)
        return image['id'], data

    def plant(self, image_id, data, *states):
        """A lazy base of ``image_id`` as this agent makes it, taken as far
        as ``states`` say: ``snapshot``, ``clone`` (a VM's disk: its name
        is returned), ``executed``, ``verified``, ``committed``; or
        ``unmarked`` (killed right after its prepare: no metadata)."""
        name = '%s_base' % image_id
        part = partial_names.partial_name(name, self.host)
        source = lazy_source.LocalSource(PORT_LEFT, 10)
        base.wait_for(lambda: KilledAgentTest._started(source), 30,
                      what='the source port to be free')
        rbd, vm_disk = self.ceph.rbd, None
        try:
            source.serve(image_id, len(data))
            spool = source.spool_maker(
                image_id, lambda: os.path.join(self.workdir, 'spool'))(0)
            spool.write(0, data)
            spool.commit(len(data))
            spec = json.dumps({'type': 'raw', 'stream': {
                'type': 'http', 'url': source.url(image_id)}})
            with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
                rbd.RBD().migration_prepare_import(spec, ioctx, part)
                if 'unmarked' in states:
                    return part, None
                with rbd.Image(ioctx, part) as image:
                    image.metadata_set(partial.OWNER_KEY, self.host)
                    image.metadata_set(rbd_lazy.LAZY_KEY,
                                       rbd_lazy.PREPARED_MARK)
                    if 'snapshot' in states:
                        image.create_snap('snap')
                        image.protect_snap('snap')
                if 'clone' in states:
                    vm_disk = '%s_disk' % self.new_instance()
                    rbd.RBD().clone(ioctx, part, 'snap', ioctx, vm_disk)
                if 'executed' in states:
                    rbd.RBD().migration_execute(ioctx, part)
                if 'verified' in states:
                    with rbd.Image(ioctx, part) as image:
                        image.metadata_set(rbd_lazy.LAZY_KEY,
                                           rbd_lazy.VERIFIED_MARK)
                if 'committed' in states:
                    rbd.RBD().migration_commit(ioctx, part)
        finally:
            source.forget(image_id)
            source.stop()
        return part, vm_disk

    def assert_base(self, image_id, data, *disks):
        name = '%s_base' % image_id
        for disk in (name,) + disks:
            for offset in (0, len(data) // 2, len(data) - units.Mi):
                self.assertEqual(data[offset:offset + units.Mi],
                                 self.ceph.read(disk, offset, units.Mi),
                                 '%s at %d' % (disk, offset))
        self.assertNotIn('.imaged-part', ' '.join(
            n for n in self.ceph.names() if n.startswith(image_id)))

    def test_a_target_without_a_clone_is_aborted(self):
        for states in ((), ('snapshot',)):
            image_id, data = self.image()
            part, _disk = self.plant(image_id, data, *states)
            self.start_agent()  # aborts it at its start, or the call does
            disk = self.create_root_disk(image_id)
            # A disk of a new lazy base, or of the base it became.
            self.assertNotIn(part, disk['parent'])
            self.assertNotIn(part, self.ceph.names())
            base.wait_for(lambda: LazyFirstDiskTest.base_published(
                self, image_id), 60, what='the lazy base to be published')
            self.assert_base(image_id, data, disk['name'])
            self.assertEqual(1, self.glance.downloads(image_id))
            self.daemon.stop()  # frees the source's port

    def test_a_copied_and_checked_target_is_published_without_download(self):
        for states in (('verified',), ('verified', 'committed')):
            image_id, data = self.image()
            part, vm_disk = self.plant(image_id, data, 'snapshot', 'clone',
                                       'executed', *states)
            self.start_agent()  # publishes it at its start, or the call
            disk = self.create_root_disk(image_id)
            self.assertEqual(LazyFirstDiskTest.base_url(self, image_id),
                             disk['parent'])
            # The leftover became the base: the VM's disk is its clone.
            self.assertEqual('%s_base' % image_id,
                             self.ceph.parent(vm_disk)[1])
            self.assert_base(image_id, data, vm_disk, disk['name'])
            self.assertEqual(0, self.glance.downloads(image_id))
            self.daemon.stop()

    def test_a_quarantined_target_is_never_published(self):
        image_id, data = self.image()
        part, vm_disk = self.plant(image_id, data, 'snapshot', 'clone',
                                   'executed', 'verified', 'committed')
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            with self.ceph.rbd.Image(ioctx, part) as image:
                image.metadata_set(rbd_lazy.QUARANTINED_KEY, 'its hash')
        self.start_agent()  # leaves it at its start
        disk = self.create_root_disk(image_id)
        # A base of a new (checked) download; the quarantined one stays
        # for its clone.
        self.assertEqual(LazyFirstDiskTest.base_url(self, image_id),
                         disk['parent'])
        self.assertEqual(1, self.glance.downloads(image_id))
        self.assertIn(part, self.ceph.names())
        self.assertEqual(part, self.ceph.parent(vm_disk)[1])

    def plant_base(self, image_id, data):
        """The image's base, complete, as another build makes it."""
        name = '%s_base' % image_id
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            self.ceph.rbd.RBD().create(ioctx, name, len(data),
                                       old_format=False)
            with self.ceph.rbd.Image(ioctx, name) as image:
                image.write(data, 0)
                for key, value in base_state.new_metadata(
                        image_id, 'another-host').items():
                    image.metadata_set(key, value)
                image.create_snap(base_state.SNAPSHOT)
                image.protect_snap(base_state.SNAPSHOT)

    def marks(self, part):
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            return guards.header_values(
                self.ceph, ioctx, part,
                (guards.MIGRATION_KEY,
                 guards.METADATA_PREFIX + rbd_lazy.QUARANTINED_KEY))

    def test_one_killed_before_its_marks_is_aborted_at_start_up(self):
        image_id, data = self.image()
        part, _disk = self.plant(image_id, data, 'unmarked')
        self.start_agent()  # no call: it aborts it at its start
        base.wait_for(lambda: part not in self.ceph.names(), 120,
                      what='the unmarked lazy base to be aborted')
        self.assertEqual(0, self.glance.downloads(image_id))
        self.assertNotIn('%s_base' % image_id, self.ceph.names())

    def test_one_whose_image_got_its_base_meanwhile_is_kept_for_its_clone(
            self):
        # A call of the image came while the dead agent's build lease
        # ran, and made the base by a download: the leftover is never
        # published, but its clone must not depend on the source.
        image_id, data = self.image(16 * units.Mi)
        part, vm_disk = self.plant(image_id, data, 'snapshot', 'clone')
        self.plant_base(image_id, data)
        self.start_agent()
        base.wait_for(lambda: list(self.marks(part)) == [
            guards.METADATA_PREFIX + rbd_lazy.QUARANTINED_KEY], 120,
            what='the leftover to be committed and kept')
        self.assertEqual(part, self.ceph.parent(vm_disk)[1])
        for offset in (0, len(data) // 2, len(data) - units.Mi):
            self.assertEqual(data[offset:offset + units.Mi],
                             self.ceph.read(vm_disk, offset, units.Mi))
        self.assertEqual(0, self.glance.downloads(image_id))
        self.assertIn('is kept for its clones', self.daemon.log())

    def test_one_with_a_clone_is_finished_at_start_up_without_a_call(self):
        image_id, data = self.image(16 * units.Mi)
        part, vm_disk = self.plant(image_id, data, 'snapshot', 'clone')
        self.start_agent()
        base.wait_for(lambda: '%s_base' % image_id in self.ceph.names(), 120,
                      what='the lazy base to be published')
        self.assertEqual('%s_base' % image_id, self.ceph.parent(vm_disk)[1])
        self.assert_base(image_id, data, vm_disk)
        self.assertEqual(1, self.glance.downloads(image_id))
        self.assertIn('Finishing the lazy bases of images %s' % image_id,
                      self.daemon.log())
