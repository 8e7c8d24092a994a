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

"""Ceph as admin: the baselines' librbd and ``rbd`` CLI work, and cleanup.

The only module of the benchmark that imports rados and rbd.
"""

import contextlib
import json
import subprocess
import time

from imaged.storage import verified
from tools.bench.progress import describe


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

    def remove_verification_record(self, image_id):
        """The pool's record of an image's verified snapshot, if any."""
        with self.ioctx(self.vms) as ioctx:
            try:
                ioctx.remove_object(verified.record_object(image_id))
            except self.rados.ObjectNotFound:
                pass

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
