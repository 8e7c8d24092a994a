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

"""Every kind of leftover (:data:`imaged.leftovers.KINDS`), planted by hand
on the real Ceph and in the cache's scratch directory, seen to go: this
host's at its start, another host's on the pool's cleanup host."""

import json
import os
import time
import uuid

import fixtures
import testtools
from testtools import content

from imaged import leftovers
from imaged import rpcapi
from imaged.storage import disk_markers
from imaged.storage import guards
from imaged.storage import lazy as rbd_lazy
from imaged.storage import partial
from imaged.storage import partial_names
from imaged.storage import snapshots
from imaged.storage import verified
from tests.functional import base

DAY = 86400


class LeftoversTest(testtools.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        base.configure_client()
        cls.api = rpcapi.ImageAgentAPI(base.CONF)
        cls.ceph = base.Ceph()

    @classmethod
    def tearDownClass(cls):
        cls.ceph.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(600, gentle=True))
        self.ctxt = base.user_context()
        self.images_pool = base.stack()['CEPH_IMAGES_POOL']

    def ioctx(self, pool=None):
        return self.ceph.cluster.open_ioctx(pool or self.ceph.pool)

    def new_image(self, name, pool=None, owner=None):
        with self.ioctx(pool) as ioctx:
            self.ceph.rbd.RBD().create(ioctx, name, 4 * 1024 * 1024,
                                       old_format=False)
            if owner is not None:
                with self.ceph.rbd.Image(ioctx, name) as image:
                    image.metadata_set(partial.OWNER_KEY, owner)
        self.addCleanup(self.ceph.remove, name, pool)

    def present(self, name, pool=None):
        return lambda: name in self.ceph.names(pool)

    # -- what each kind looks like ----------------------------------------

    def plant_pool_partial(self, host, age):
        name = partial_names.partial_name('%s_disk' % uuid.uuid4(), host,
                                          now=time.time() - age)
        self.new_image(name, owner=host)
        return self.present(name)

    def plant_guarded_partial(self, host, age, lease):
        """A pool partial whose writer held a build lock, with ``lease``
        seconds left on it, and a name ``age`` seconds old."""
        key = 'imaged.lock.%s' % uuid.uuid4()
        name = partial_names.partial_name('%s_disk' % uuid.uuid4(), host,
                                          now=time.time() - age)
        self.new_image(name, owner=host)
        with self.ioctx() as ioctx:
            with self.ceph.rbd.Image(ioctx, name) as image:
                image.metadata_set(guards.GUARDS_KEY,
                                   json.dumps([[key, 'build']]))
            ioctx.lock_exclusive(key, 'build', 'a-writer', duration=lease)
        self.addCleanup(self.remove_object, key)
        return self.present(name)

    def remove_object(self, key):
        import rados
        with self.ioctx() as ioctx:
            try:
                ioctx.remove_object(key)
            except rados.ObjectNotFound:
                pass

    def plant_marked_disk(self, host):
        name = '%s_disk' % uuid.uuid4()
        self.new_image(name)
        with self.ioctx() as ioctx:
            ioctx.set_xattr(disk_markers.CREATING_OBJECT, name, json.dumps(
                {'host': host, 'at': int(time.time())}).encode())
        self.addCleanup(self.rm_xattr, disk_markers.CREATING_OBJECT, name)
        return self.present(name)

    def plant_trashed_base(self):
        name = '%s_base' % uuid.uuid4()
        self.new_image(name)
        with self.ioctx() as ioctx:
            self.ceph.rbd.RBD().trash_move(ioctx, name)
        return lambda: name in self.ceph.trash()

    def plant_kept_lazy_base(self, host):
        """A lazy base never published, kept for a clone that is gone: as
        committed (a plain image), its snapshot protected."""
        name = partial_names.partial_name('%s_base' % uuid.uuid4(), host)
        self.new_image(name, owner=host)
        with self.ioctx() as ioctx:
            with self.ceph.rbd.Image(ioctx, name) as image:
                image.metadata_set(rbd_lazy.LAZY_KEY, rbd_lazy.VERIFIED_MARK)
                image.metadata_set(rbd_lazy.QUARANTINED_KEY, 'its hash')
                image.create_snap('snap')
                image.protect_snap('snap')
        return self.present(name)

    def plant_snapshot_partial(self, host, age):
        name = partial_names.partial_name(str(uuid.uuid4()), host,
                                          now=time.time() - age)
        self.new_image(name, pool=self.images_pool, owner=host)
        return self.present(name, self.images_pool)

    def plant_temporary_snapshot(self, host):
        disk, image_id = '%s_disk' % uuid.uuid4(), str(uuid.uuid4())
        snap = snapshots.disk_snapshot_name(image_id)
        self.new_image(disk)
        key = '%s@%s' % (disk, snap)
        with self.ioctx() as ioctx:
            ioctx.set_xattr(snapshots.TAKING_OBJECT, key, json.dumps(
                {'host': host, 'at': int(time.time())}).encode())
            with self.ceph.rbd.Image(ioctx, disk) as image:
                image.create_snap(snap)
        self.addCleanup(self.rm_xattr, snapshots.TAKING_OBJECT, key)

        def there():
            with self.ioctx() as ioctx:
                with self.ceph.rbd.Image(ioctx, disk,
                                         read_only=True) as image:
                    return snap in {s['name'] for s in image.list_snaps()}
        return there

    def rm_xattr(self, key, name):
        import rados
        with self.ioctx() as ioctx:
            try:
                ioctx.rm_xattr(key, name)
            except (rados.NoData, rados.ObjectNotFound):
                pass

    def plant_everything(self, host, workdir, trash=True):
        """One of each kind, made by ``host`` (a trashed base is nobody's:
        unless ``trash`` is False); ``{kind: still there?}``."""
        tmp = os.path.join(workdir, 'state', '_base', '.tmp')
        os.makedirs(tmp, exist_ok=True)
        scratch = os.path.join(tmp, '%s.download.%s' % (
            uuid.uuid4(), uuid.uuid4().hex[:8]))
        open(scratch, 'w').close()
        os.utime(scratch, (time.time() - DAY, time.time() - DAY))
        planted = {
            'scratch file': lambda: os.path.exists(scratch),
            'pool partial': self.plant_pool_partial(host, 2 * 3600),
            'marked disk': self.plant_marked_disk(host),
            'snapshot partial': self.plant_snapshot_partial(host, 2 * 3600),
            'temporary disk snapshot': self.plant_temporary_snapshot(host),
        }
        if trash:
            planted['trashed base'] = self.plant_trashed_base()
            planted['verification record'] = \
                self.plant_verification_record()
            planted['kept lazy base'] = self.plant_kept_lazy_base(host)
        return planted

    def plant_verification_record(self):
        """The record of a signed image's snapshot that is gone, as
        imaged.storage.verified writes it: an xattr, listed in an omap."""
        import rados
        image_id = str(uuid.uuid4())
        key = verified.record_object(image_id)
        with self.ioctx() as ioctx:
            ioctx.set_xattr(key, verified.XATTR, json.dumps({
                'location': '%s/%s@snap' % (self.images_pool, image_id),
                'outcome': 'verified', 'host': 'dead-host',
                'at': time.time()}).encode())
            with rados.WriteOpCtx() as op:
                ioctx.set_omap(op, (image_id,), (b'',))
                ioctx.operate_write_op(op, verified.INDEX_OBJECT)
        self.addCleanup(self.unlist, image_id)
        self.addCleanup(self.remove_object, key)

        def there():
            with self.ioctx() as ioctx:
                try:
                    ioctx.stat(key)
                    return True
                except rados.ObjectNotFound:
                    pass
                with rados.ReadOpCtx() as op:
                    found, _ret = ioctx.get_omap_vals_by_keys(op, (image_id,))
                    ioctx.operate_read_op(op, verified.INDEX_OBJECT)
                    return bool(list(found))
        return there

    def unlist(self, image_id):
        import rados
        with self.ioctx() as ioctx, rados.WriteOpCtx() as op:
            ioctx.remove_omap_keys(op, (image_id,))
            ioctx.operate_write_op(op, verified.INDEX_OBJECT)

    def wait_gone(self, planted, daemon, who):
        self.addOnException(lambda exc_info: self.addDetail(
            'agent-log', content.text_content(daemon.log()[-20000:])))
        try:
            base.wait_for(lambda: not any(there() for there in
                                          planted.values()),
                          120, interval=1, what='%s leftovers to go' % who)
        except Exception:
            self.fail('%s leftovers still there: %s' % (
                who, sorted(k for k, there in planted.items() if there())))

    def start_agent(self, host, workdir, options=None):
        daemon = base.Daemon(workdir, host, options).start()
        self.addCleanup(daemon.stop)
        base.FunctionalTestCase.wait_until_serving(self.api, self.ctxt,
                                                   host, daemon)
        return daemon

    def test_this_host_s_leftovers_go_at_its_start(self):
        host = 'leftovers-%s' % uuid.uuid4().hex[:8]
        workdir = self.useFixture(fixtures.TempDir()).path
        # Its leftovers look abandoned to a pool cleanup host meanwhile.
        self.useFixture(base.PoolSweeps())
        # The trash is the pool's: the cleanup host's, never a host's own.
        planted = self.plant_everything(host, workdir, trash=False)
        self.assertTrue(all(there() for there in planted.values()))
        daemon = self.start_agent(host, workdir)
        self.wait_gone(planted, daemon, 'its own')

    def test_another_host_s_leftovers_go_on_the_cleanup_host(self):
        # No other test's planted leftover meanwhile: this host sweeps
        # them all.
        self.useFixture(base.PoolSweeps(exclusive=True))
        host = 'cleanup-%s' % uuid.uuid4().hex[:8]
        workdir = self.useFixture(fixtures.TempDir()).path
        daemon = self.start_agent(host, workdir, {
            'image_cache': {'manager_interval': '2',
                            'pool_cleanup': 'always'}})
        planted = self.plant_everything('dead-%s' % uuid.uuid4().hex[:8],
                                        workdir)
        self.assertEqual({kind.name for kind in leftovers.KINDS},
                         set(planted))
        # Judged by the lease of its writer's lock in Ceph, not by age: a
        # new one whose writer's lease ran out goes, an old one whose
        # writer's lease runs stays.
        planted['guarded partial, lease out'] = self.plant_guarded_partial(
            'dead-%s' % uuid.uuid4().hex[:8], 0, 1)
        live = self.plant_guarded_partial('slow-%s' % uuid.uuid4().hex[:8],
                                          2 * DAY, 600)
        self.wait_gone(planted, daemon, 'another host\'s')
        self.assertTrue(live(), 'a partial whose writer holds its lock '
                        'was removed')
