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

"""Root disks on the real stack, through ImageAgentAPI."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from oslo_utils import units

from imaged import exception
from tests.functional import base

# The object whose xattrs name the disks being cloned (imaged's layout).
CREATING = 'imaged.disks.creating'


def image_holding(data, fmt):
    """An 8 MiB ``qemu-img convert -O fmt`` image (its default options)
    whose guest-visible first bytes are ``data``."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, image = os.path.join(tmp, 'raw'), os.path.join(tmp, fmt)
        with open(raw, 'wb') as f:
            f.write(data)
            f.truncate(8 * units.Mi)
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', fmt,
                        raw, image], check=True, capture_output=True)
        with open(image, 'rb') as f:
            return f.read()


def qcow2_holding(data):
    """A qcow2 image whose guest-visible first bytes are ``data``."""
    return image_holding(data, 'qcow2')


class RootDiskTest(base.FunctionalTestCase):

    def test_capabilities_show_the_cluster(self):
        caps = self.api.get_capabilities(self.ctxt, self.host)
        self.assertEqual(base.stack()['CEPH_FSID'], caps['fsid'])
        self.assertEqual([], caps['problems'])
        self.assertEqual((self.host, 'rbd', base.stack()['CEPH_VMS_POOL']),
                         (caps['host'], caps['backend'], caps['pool']))
        self.assertGreater(caps['cache']['free_bytes'], 0)

    def test_raw_image_in_ceph_store_is_cloned(self):
        data = base.random_raw(3 * units.Mi)
        image = self.glance.create(data, backend='ceph')
        disk = self.create_root_disk(image['id'], size_gb=2)
        self.assertEqual('clone', disk['strategy'])
        self.assertEqual(self.glance.rbd_location(image['id']),
                         disk['parent'])
        self.assertEqual(2 * units.Gi, disk['size_bytes'])
        self.assertEqual(2 * units.Gi, self.ceph.size(disk['name']))
        self.assertEqual(data[:units.Mi],
                         self.ceph.read(disk['name'], 0, units.Mi))
        self.assertEqual(0, self.glance.downloads(image['id']))

    def test_raw_image_in_file_store_is_downloaded_once(self):
        data = base.random_raw(units.Mi) + bytes(4 * units.Mi) + b'tail'
        image = self.glance.create(data, backend='local')
        first = self.create_root_disk(image['id'])
        base_url = 'rbd://%s/%s/%s_base/snap' % (
            base.stack()['CEPH_FSID'], base.stack()['CEPH_VMS_POOL'],
            image['id'])
        self.assertEqual(('download', base_url),
                         (first['strategy'], first['parent']))
        self.assertEqual(data, self.ceph.read(first['name'], 0, len(data)))
        self.assertIn(image['id'], self.cached_ids())
        second = self.create_root_disk(image['id'])
        self.assertEqual(('download', base_url),
                         (second['strategy'], second['parent']))
        self.assertEqual(data, self.ceph.read(second['name'], 0, len(data)))
        self.assertEqual(1, self.glance.downloads(image['id']))

    def test_every_byte_arrives_with_writes_in_flight(self):
        # Many whole 4 MiB blocks written at once from imaged's reused
        # buffers (none may be reused before its write completes), then a
        # short last one.
        data = base.random_raw(37 * units.Mi + 12345)
        image = self.glance.create(data, backend='local')
        disk = self.create_root_disk(image['id'])
        self.assertEqual('download', disk['strategy'])
        self.assertEqual(data, self.ceph.read(disk['name'], 0, len(data)))

    def test_qcow2_image_is_converted(self):
        data = base.random_raw(2 * units.Mi)
        image = self.glance.create(qcow2_holding(data), disk_format='qcow2',
                                   backend='local')
        disk = self.create_root_disk(image['id'])
        self.assertEqual('download', disk['strategy'])
        self.assertEqual(data, self.ceph.read(disk['name'], 0, len(data)))
        entries = {e['where']: e for e in self.api.list_cached_images(
            base.service_context(), self.host)
            if e['image_id'] == image['id']}
        # Converted straight into the base image: no local file is kept.
        self.assertEqual({'rbd': 8 * units.Mi},
                         {w: e['size_bytes'] for w, e in entries.items()})

    def test_vhdx_image_made_by_qemu_img_is_converted(self):
        # qemu-img's VHDX has its metadata table at 3 MiB and the virtual
        # size just past it: in the first 4 MiB block the download reads.
        data = base.random_raw(2 * units.Mi) + b'vhdx'
        image = self.glance.create(image_holding(data, 'vhdx'),
                                   disk_format='vhdx', backend='local')
        disk = self.create_root_disk(image['id'])
        self.assertEqual('download', disk['strategy'])
        self.assertEqual(data + bytes(8 * units.Mi - len(data)),
                         self.ceph.read(disk['name'], 0, 8 * units.Mi))

    def test_qcow2_in_ceph_store_is_downloaded_not_cloned(self):
        data = base.random_raw(units.Mi)
        image = self.glance.create(qcow2_holding(data), disk_format='qcow2',
                                   backend='ceph')
        disk = self.create_root_disk(image['id'])
        self.assertEqual('download', disk['strategy'])
        self.assertEqual(data, self.ceph.read(disk['name'], 0, len(data)))

    def test_simultaneous_calls_download_once(self):
        data = base.random_raw(8 * units.Mi)
        image = self.glance.create(data, backend='local')
        results, errors = [], []

        def create():
            try:
                results.append(self.create_root_disk(image['id']))
            except Exception as e:
                errors.append(e)
        threads = [threading.Thread(target=create) for _i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertEqual([], errors)
        self.assertEqual(6, len({r['name'] for r in results}))
        self.assertEqual(1, self.glance.downloads(image['id']))
        for result in results:
            self.assertEqual(data[-4096:], self.ceph.read(
                result['name'], len(data) - 4096, 4096))

    def test_repeat_returns_the_existing_disk(self):
        image = self.glance.create(base.random_raw(units.Mi), backend='ceph')
        instance_uuid = self.new_instance()
        first = self.create_root_disk(image['id'], 2, instance_uuid)
        again = self.create_root_disk(image['id'], 1, instance_uuid)
        self.assertEqual('existing', again['strategy'])
        self.assertEqual(first['size_bytes'], again['size_bytes'])
        self.assertEqual(first['parent'], again['parent'])
        self.assertRaises(exception.InvalidInput, self.create_root_disk,
                          image['id'], 3, instance_uuid)

    def test_delete_root_disk(self):
        image = self.glance.create(base.random_raw(units.Mi), backend='ceph')
        disk = self.create_root_disk(image['id'])
        instance_uuid = disk['instance_uuid']
        self.api.delete_root_disk(self.ctxt, self.host, instance_uuid)
        self.assertNotIn(disk['name'], self.ceph.names())
        self.assertIsNone(self.api.delete_root_disk(self.ctxt, self.host,
                                                    instance_uuid))

    def test_image_larger_than_disk_is_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'big.qcow2')
            subprocess.run(['qemu-img', 'create', '-f', 'qcow2', path, '2G'],
                           check=True, capture_output=True)
            with open(path, 'rb') as f:
                image = self.glance.create(f.read(), disk_format='qcow2',
                                           backend='local')
        instance_uuid = self.new_instance()
        e = self.assertRaises(exception.ImageTooLarge, self.create_root_disk,
                              image['id'], 1, instance_uuid)
        self.assertIn(image['id'], str(e))
        self.assertNotIn('%s_disk' % instance_uuid, self.ceph.names())

    def test_missing_image_is_image_not_found(self):
        e = self.assertRaises(exception.ImageNotFound,
                              self.create_root_disk,
                              '00000000-0000-4000-8000-000000000000')
        self.assertIn('00000000-0000-4000-8000-000000000000', str(e))

    def test_backing_file_is_refused_and_leaves_nothing(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'evil.qcow2')
            subprocess.run(['qemu-img', 'create', '-f', 'qcow2', '-b',
                            '/etc/passwd', '-F', 'raw', path, '8M'],
                           check=True, capture_output=True)
            with open(path, 'rb') as f:
                evil = f.read()
        # Glance 33 refuses this with container_format=bare; an older
        # Glance, or another container format, lets it through.
        image = self.glance.create(evil, disk_format='qcow2',
                                   container_format='ovf', backend='local')
        instance_uuid = self.new_instance()
        e = self.assertRaises(exception.ImageUnacceptable,
                              self.create_root_disk, image['id'], 1,
                              instance_uuid)
        self.assertIn('backing_file', str(e))
        self.assertNotIn(image['id'], self.cached_ids())
        self.assertNotIn('%s_disk' % instance_uuid, self.ceph.names())
        self.assertEqual([], [n for n in self.ceph.names()
                              if n.startswith(instance_uuid)])


class ClientCommandTest(base.FunctionalTestCase):
    """``imaged-client`` prints JSON, and typed errors as JSON on stderr."""

    def client(self, *args, ctxt=None):
        """imaged-client, sending ``ctxt``'s token ($OS_AUTH_TOKEN)."""
        env = dict(os.environ)
        env.pop('OS_AUTH_TOKEN', None)
        if ctxt is not None:
            env['OS_AUTH_TOKEN'] = ctxt.auth_token
        return subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), 'imaged-client'),
             '--config-file', self.daemon.config_file, '--host', self.host]
            + list(args), capture_output=True, text=True, timeout=120,
            env=env)

    def test_capabilities_show_the_fsid(self):
        result = self.client('capabilities')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(base.stack()['CEPH_FSID'],
                         json.loads(result.stdout)['fsid'])

    def test_create_list_and_delete(self):
        image = self.glance.create(base.random_raw(units.Mi), backend='local')
        instance_uuid = self.new_instance()
        # Without a token the client is anonymous: not the demo user's
        # image, not the cache's list.
        result = self.client('create-root-disk', instance_uuid, image['id'],
                             '1')
        self.assertEqual(1, result.returncode)
        self.assertEqual('NotAuthorized', json.loads(
            result.stderr.strip().splitlines()[-1])['error'])
        result = self.client('list-cached', ctxt=self.ctxt)
        self.assertEqual('NotAuthorized', json.loads(
            result.stderr.strip().splitlines()[-1])['error'])
        result = self.client('create-root-disk', instance_uuid, image['id'],
                             '1', ctxt=self.ctxt)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('download', json.loads(result.stdout)['strategy'])
        cached = json.loads(self.client(
            'list-cached', ctxt=base.service_context()).stdout)
        self.assertIn(image['id'], [e['image_id'] for e in cached])
        result = self.client('delete-root-disk', instance_uuid,
                             ctxt=self.ctxt)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertNotIn('%s_disk' % instance_uuid, self.ceph.names())

    def test_bad_input_is_a_json_error(self):
        result = self.client('create-root-disk', 'not-a-uuid',
                             '00000000-0000-4000-8000-000000000000', '1')
        self.assertEqual(1, result.returncode)
        error = json.loads(result.stderr.strip().splitlines()[-1])
        self.assertEqual('InvalidInput', error['error'])
        self.assertIn('instance_uuid', error['message'])


class CrashedCloneTest(base.FunctionalTestCase):
    """What a create killed between its clone and its last metadata leaves,
    planted by hand on the real Ceph: the disk under its final name, with
    other bytes and no image id, and the marker naming the host that was
    making it (``imaged.storage.disks``)."""

    def plant(self, host, instance_uuid=None):
        # A pool cleanup host would take it for abandoned.
        self.useFixture(base.PoolSweeps())
        instance_uuid = instance_uuid or self.new_instance()
        name = '%s_disk' % instance_uuid
        other = self.glance.create(base.random_raw(units.Mi), backend='ceph')
        pool, parent, snap = self.glance.rbd_location(other['id']).split(
            '/')[3:]
        with self.ceph.cluster.open_ioctx(pool) as parent_ioctx, \
                self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            self.ceph.rbd.RBD().clone(parent_ioctx, parent, snap, ioctx, name)
            ioctx.set_xattr(CREATING, name, json.dumps(
                {'host': host, 'at': int(time.time())}).encode())
        self.addCleanup(self.unmark, name)
        return instance_uuid, name

    def unmark(self, name):
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            try:
                ioctx.rm_xattr(CREATING, name)
            except (self.rados.NoData, self.rados.ObjectNotFound):
                pass

    def marked(self):
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            try:
                return {name for name, _v in ioctx.get_xattrs(CREATING)}
            except self.rados.ObjectNotFound:
                return set()

    @property
    def rados(self):
        import rados
        return rados

    def test_the_next_create_makes_the_disk_again(self):
        data = base.random_raw(units.Mi)
        image = self.glance.create(data, backend='ceph')
        instance_uuid, name = self.plant('crashed-host')
        disk = self.create_root_disk(image['id'], 1, instance_uuid)
        self.assertEqual(('clone', self.glance.rbd_location(image['id'])),
                         (disk['strategy'], disk['parent']))
        self.assertEqual(data, self.ceph.read(name, 0, units.Mi))
        self.assertNotIn(name, self.marked())
        self.assertEqual('existing', self.create_root_disk(
            image['id'], 1, instance_uuid)['strategy'])
        self.assertIn('is what a crashed create left', self.daemon.log())

    def test_a_delete_removes_it_and_its_marker(self):
        instance_uuid, name = self.plant('crashed-host')
        self.api.delete_root_disk(self.ctxt, self.host, instance_uuid)
        self.assertNotIn(name, self.ceph.names())
        self.assertNotIn(name, self.marked())

    def hold_lock(self, name, host):
        """The disk's lock, held as a create running on ``host`` holds it
        (``imaged.storage.disks``), for the rest of the test."""
        key, cookie = 'imaged.lock.' + name, uuid.uuid4().hex
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            ioctx.lock_exclusive(key, 'imaged-disk', cookie, desc=host,
                                 duration=600)

        def release():
            with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
                for undo in (lambda: ioctx.unlock(key, 'imaged-disk', cookie),
                             lambda: ioctx.remove_object(key)):
                    try:
                        undo()
                    except self.rados.ObjectNotFound:
                        pass
        self.addCleanup(release)

    def test_the_crashed_host_s_next_start_removes_it(self):
        host = 'crashed-%s' % uuid.uuid4().hex[:8]
        _instance_uuid, name = self.plant(host)
        _other_uuid, others = self.plant('another-host')
        # Another host making its disk now holds the disk's lock.
        self.hold_lock(others, 'another-host')
        workdir = tempfile.mkdtemp(prefix='imaged-func-', dir=self.workdir)
        restarted = base.Daemon(workdir, host).start()
        self.addCleanup(restarted.stop)
        base.wait_for(lambda: name not in self.ceph.names(), 90,
                      interval=0.5, what='the start-up sweep')
        self.assertNotIn(name, self.marked())
        # Another host's disk waits for that host, or for its lock's lease
        # to run out.
        self.assertIn(others, self.ceph.names())
        self.assertIn(others, self.marked())
