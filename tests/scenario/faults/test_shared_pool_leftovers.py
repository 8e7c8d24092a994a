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

"""What crashes leave in a shared pool, planted by hand, then a fresh agent.

Each test plants, under the name a base image of an uploaded image would
have, what a host killed at some step leaves (or what some other tool keeps
there), then asks a fresh agent of another host for a disk of that image:
it must succeed, with the image's bytes (the planted images hold other
bytes, so a disk cloned from one of them is caught), and the pool must be
left as it should (a complete base, the other host's things untouched).
"""

import datetime
import hashlib
import uuid

from oslo_utils import units

from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import images
from tests.scenario.faults import base as fault_base

IMAGE_SIZE = 4 * units.Mi
CRASHED_HOST = 'crashed-host'
# The base-image metadata imaged keeps (imaged/storage/bases.py).
HOST_KEY = 'imaged.host'
IMAGE_ID_KEY = 'imaged.image_id'
MADE_BY_KEY = 'imaged.made_by'
MADE_AT_KEY = 'imaged.made_at'
COMPLETE_KEY = 'imaged.complete'
SNAPSHOT = 'snap'


def base_name(image_id):
    return '%s_base' % image_id


def made_by(image_id, host=CRASHED_HOST, complete='true', hours_ago=1):
    made_at = datetime.datetime.now(datetime.timezone.utc) - \
        datetime.timedelta(hours=hours_ago)
    metadata = {HOST_KEY: host, IMAGE_ID_KEY: image_id, MADE_BY_KEY: host,
                MADE_AT_KEY: made_at.isoformat()}
    if complete is not None:
        metadata[COMPLETE_KEY] = complete
    return metadata


def partial_name(name, host):
    tag = hashlib.sha256(host.encode()).hexdigest()[:8]
    return '%s.%s-%s%s' % (name, tag, uuid.uuid4().hex[:8],
                           base.PARTIAL_SUFFIX)


class BaseLeftoverTest(fault_base.PoolFaultTestCase):

    # Leftovers under its own images' names, agents of its own (no pool
    # cleanup of theirs removes what another test made): nothing shared
    # is disturbed.
    exclusive = False

    def _image_with_leftover(self, snapshot=None, protect=False,
                             metadata=None):
        """A new image, and under its base's name other bytes planted
        (``metadata`` may be a function of the image id)."""
        data = images.random_bytes(IMAGE_SIZE)
        image = self.upload(data)
        if callable(metadata):
            metadata = metadata(image['id'])
        self.plant_image(base_name(image['id']),
                         images.random_bytes(IMAGE_SIZE), snapshot=snapshot,
                         protect=protect, metadata=metadata)
        return data, image

    def assertFreshAgentMakesTheDisk(self, data, image):
        agent = self.start_agent()
        disk = self.create_on(agent, image['id'])
        self.assertDiskHolds(disk['name'], data)
        return agent, disk

    def assertCompleteBase(self, image_id, data, host):
        name = base_name(image_id)
        self.assertEqual({SNAPSHOT: True}, self.snapshots(name))
        metadata = self.metadata(name)
        self.assertEqual('true', metadata.get(COMPLETE_KEY), metadata)
        self.assertEqual(image_id, metadata.get(IMAGE_ID_KEY), metadata)
        self.assertEqual(host, metadata.get(MADE_BY_KEY), metadata)
        with self.rbd_image(name, snapshot=SNAPSHOT, read_only=True) as snap:
            self.assertEqual(base.sha256(data),
                             base.sha256(snap.read(0, len(data))))

    def _broken_base_is_rebuilt(self, **leftover):
        data, image = self._image_with_leftover(**leftover)
        agent, disk = self.assertFreshAgentMakesTheDisk(data, image)
        self.assertEqual('download', disk['strategy'])
        self.assertCompleteBase(image['id'], data, agent.host)
        self.assertDownloads(1, image['id'])
        self.assertEqual([], self.partial_images(image['id']))

    def test_base_without_its_snapshot_is_rebuilt(self):
        # Killed between "remove the snapshot" and "remove the image".
        self._broken_base_is_rebuilt(
            metadata=lambda i: made_by(i, complete='false'))

    def test_base_with_its_snapshot_unprotected_is_rebuilt(self):
        # Killed between "unprotect" and "remove the snapshot".
        self._broken_base_is_rebuilt(
            snapshot=SNAPSHOT,
            metadata=lambda i: made_by(i, complete='false'))

    def test_base_whose_metadata_says_incomplete_is_rebuilt(self):
        self._broken_base_is_rebuilt(
            snapshot=SNAPSHOT, protect=True,
            metadata=lambda i: made_by(i, complete='false'))

    def test_base_without_the_complete_flag_is_rebuilt(self):
        # Killed while its metadata was being written.
        self._broken_base_is_rebuilt(
            snapshot=SNAPSHOT, protect=True,
            metadata=lambda i: made_by(i, complete=None))

    def test_foreign_image_named_like_the_base_is_not_used_nor_touched(self):
        # Not imaged's (no imaged.* metadata): never cloned, never removed,
        # and the image is still usable.
        foreign_metadata = {'owner': 'another-tool'}
        data, image = self._image_with_leftover(
            snapshot=SNAPSHOT, protect=True, metadata=foreign_metadata)
        name = base_name(image['id'])
        with self.rbd_image(name, read_only=True) as planted:
            before = base.sha256(planted.read(0, IMAGE_SIZE))
        self.assertFreshAgentMakesTheDisk(data, image)
        self.assertEqual({SNAPSHOT: True}, self.snapshots(name))
        self.assertEqual(foreign_metadata, self.metadata(name))
        with self.rbd_image(name, read_only=True) as planted:
            self.assertEqual(before, base.sha256(planted.read(0, IMAGE_SIZE)))

    def test_partial_base_of_another_host_is_left_to_it(self):
        data = images.random_bytes(IMAGE_SIZE)
        image = self.upload(data)
        other = 'other-%s' % uuid.uuid4().hex[:8]
        part = partial_name(base_name(image['id']), other)
        self.plant_image(part, images.random_bytes(IMAGE_SIZE // 2),
                         size=IMAGE_SIZE, metadata={HOST_KEY: other})
        agent, disk = self.assertFreshAgentMakesTheDisk(data, image)
        self.assertCompleteBase(image['id'], data, agent.host)
        # Its start-up sweep and the create are behind us; the other host
        # may still be writing it.
        self.assertIn(part, self.ceph.names_with(image['id']))
        self.assertEqual({HOST_KEY: other}, self.metadata(part))


class ForeignImagesCleanupTest(fault_base.PoolFaultTestCase):

    def test_cleanup_removes_our_unused_bases_and_nothing_foreign(self):
        data = images.random_bytes(units.Mi)
        foreign = {}
        for metadata in ({}, {'owner': 'another-tool'}):
            name = base_name(str(uuid.uuid4()))
            self.plant_image(name, data, snapshot=SNAPSHOT, protect=True,
                             metadata=metadata)
            foreign[name] = metadata
        # Ours, complete, made by a host long gone, cloned by nobody.
        ours_id = str(uuid.uuid4())
        ours = base_name(ours_id)
        self.plant_image(ours, data, snapshot=SNAPSHOT, protect=True,
                         metadata=made_by(ours_id))
        self.start_agent({'image_cache': {'manager_interval': '1',
                                          'rbd_base_min_age': '0',
                                          'pool_cleanup': 'always'}})
        base.wait_for(lambda: ours not in self.ceph.names(), 60,
                      interval=1, what='the cleanup to remove %s' % ours)
        for name, metadata in foreign.items():
            self.assertEqual({SNAPSHOT: True}, self.snapshots(name))
            self.assertEqual(metadata, self.metadata(name))
            self.assertEqual(base.sha256(data),
                             base.sha256(self.ceph.read(name, 0, len(data))))
