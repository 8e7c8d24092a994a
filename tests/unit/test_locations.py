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

"""CloneableLocations: record, then the locations API, then copy-image."""

import logging

import threading
import time

import fixtures

from imaged import exception
from imaged.image import glance
from imaged.image import locations
from imaged.image import record as image_record
from imaged.image import store_copy
from imaged.storage import location as rbd_location
from tests import base

IMAGE = 'img-1'
FSID = '6f1d7c2e-0a4b-4b1e-9d55-3f7d2a1c9e10'
OURS = 'rbd://%s/images/%s/snap' % (FSID, IMAGE)
COPY = 'rbd://%s/glance-ceph/%s/snap' % (FSID, IMAGE)
ELSEWHERE = 'rbd://00000000-0000-0000-0000-000000000000/images/%s/snap' % (
    IMAGE)
FILE = 'file:///var/lib/glance/images/%s' % IMAGE
SWIFT = 'swift+https://tenant:s3cr3t-key@swift.test/v1/glance/%s' % IMAGE


class FakeStorage:
    """in_cluster() and snapshot_size() over the snapshots of one cluster."""

    def __init__(self, *cloneable):
        self.cloneable = set(cloneable)
        self.probed = []  # URLs whose snapshot was opened
        self.error = None  # raised by snapshot_size()

    def in_cluster(self, loc):
        return loc.fsid == FSID

    def snapshot_size(self, loc):
        url = rbd_location.format_rbd_location(*loc)
        self.probed.append(url)
        if self.error is not None:
            raise self.error
        return 4096 if url in self.cloneable else None


class FakeGlance:
    """Records, the locations API and copy-image for one image."""

    def __init__(self, record, api=None, copy_answer=None,
                 copy_lands=COPY, copy_store='ceph'):
        self.record = dict(record, id=IMAGE)
        self.api = api  # a list of URLs, or a reason the API refuses
        self.copy_answer = copy_answer or (glance.COPY_STARTED, None)
        self.copy_lands = copy_lands
        self.copy_store = copy_store
        self.calls = []
        # Glance's RBD stores (GET /v2/info/stores/detail), or None.
        self.stores = [{'id': 'ceph', 'pool': 'images', 'fsid': FSID},
                       {'id': 'ceph2', 'pool': 'glance-ceph', 'fsid': FSID}]
        self.stores_read = 0

    def rbd_stores(self):
        self.stores_read += 1
        return self.stores

    def show(self, context, image_id, as_service=False):
        self.calls.append('show')
        return image_record.ImageRecord.from_glance(self.record, image_id)

    def image_locations(self, context, image_id):
        self.calls.append('locations api')
        if isinstance(self.api, str):
            return None, self.api
        return [{'url': u, 'metadata': {}} for u in self.api], None

    def copy_to_store(self, image_id, store, context=None):
        self.calls.append('copy %s' % store)
        if self.copy_answer[0] == glance.COPY_STARTED:
            # Glance copies at once; the record shows it from now on.
            self.record['stores'] += ',' + store
            self.api = list(self.api) + [self.copy_lands]
        return self.copy_answer


class FakeTimings:
    def __init__(self):
        self.steps = []

    def step(self, name):
        self.steps.append(name)


class LocationsTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(copy_poll_interval=1.0, copy_timeout=5, group='glance')
        self.log = self.useFixture(fixtures.FakeLogger(
            level=logging.DEBUG, format='%(levelname)s %(message)s'))
        self.storage = FakeStorage(OURS, COPY)
        self.timings = FakeTimings()
        self.now = [0.0]

    def cloneable(self, glance_api, image=None):
        def sleep(seconds):
            self.now[0] += seconds
        copier = store_copy.StoreCopier(self.conf, glance_api,
                                        clock=lambda: self.now[0],
                                        sleep=sleep)
        self.finder = locations.CloneableLocations(
            self.conf, glance_api, self.storage, copier=copier)
        return self.finder.cloneable(None, image or glance_api.show(
            None, IMAGE), self.timings)

    def raw(self, **record):
        record.setdefault('disk_format', 'raw')
        record.setdefault('stores', 'file')
        return record

    def test_record_locations_first_without_asking_the_api(self):
        api = FakeGlance(self.raw(locations=[{'url': FILE},
                                             {'url': OURS}]), api=[])
        location, size = self.cloneable(api)
        self.assertEqual(OURS, rbd_location.format_rbd_location(*location))
        self.assertEqual(4096, size)
        self.assertEqual(['show'], api.calls)
        self.assertEqual([], self.timings.steps)

    def test_record_direct_url(self):
        api = FakeGlance(self.raw(direct_url=OURS), api=[])
        location, _size = self.cloneable(api)
        self.assertEqual(IMAGE, location.image)
        self.assertNotIn('locations api', api.calls)

    def test_not_raw_is_never_cloned_nor_asked_about(self):
        api = FakeGlance(self.raw(disk_format='qcow2', direct_url=OURS),
                         api=[OURS])
        self.flags(rbd_store_name='ceph', group='glance')
        self.assertEqual((None, None), self.cloneable(api))
        self.assertEqual(['show'], api.calls)
        self.assertEqual([], self.storage.probed)

    def test_hidden_locations_come_from_the_api(self):
        api = FakeGlance(self.raw(), api=[FILE, OURS])
        location, _size = self.cloneable(api)
        self.assertEqual(IMAGE, location.image)
        self.assertEqual(['show', 'locations api'], api.calls)
        self.assertEqual(['locations api'], self.timings.steps)

    def test_a_storm_of_one_image_asks_glance_once(self):
        # Issue 24: 16 callers of one image on one host, released together,
        # share one locations lookup; the others wait for its answer.
        self.flags(cloneable_location_ttl=60, group='glance')
        api = FakeGlance(self.raw(), api=[FILE, OURS])
        real = api.image_locations
        started = threading.Event()

        def slow(context, image_id):
            started.set()
            time.sleep(0.2)
            return real(context, image_id)
        api.image_locations = slow
        finder = locations.CloneableLocations(self.conf, api, self.storage)
        image = api.show(None, IMAGE)
        found = []
        callers = [threading.Thread(target=lambda: found.append(
            finder.cloneable(None, image, FakeTimings())))
            for _ in range(16)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(10)
        self.assertEqual(16, len(found))
        self.assertEqual({IMAGE}, {loc.image for loc, _size in found})
        self.assertEqual(1, api.calls.count('locations api'))

    def test_a_found_location_is_remembered_for_the_ttl(self):
        clock = [100.0]
        self.flags(cloneable_location_ttl=60, group='glance')
        api = FakeGlance(self.raw(), api=[FILE, OURS])
        self.finder = locations.CloneableLocations(
            self.conf, api, self.storage, clock=lambda: clock[0])
        first = self.finder.cloneable(None, api.show(None, IMAGE),
                                      self.timings)
        again = self.finder.cloneable(None, api.show(None, IMAGE),
                                      self.timings)
        self.assertEqual(first, again)
        self.assertEqual(['show', 'locations api', 'show'], api.calls)
        self.assertEqual([OURS], self.storage.probed)
        # Past the TTL, Glance and Ceph are asked again.
        clock[0] += 61
        self.finder.cloneable(None, api.show(None, IMAGE), self.timings)
        self.assertEqual(2, api.calls.count('locations api'))
        self.assertEqual([OURS, OURS], self.storage.probed)

    def test_a_forgotten_location_is_looked_up_again(self):
        api = FakeGlance(self.raw(), api=[OURS])
        self.cloneable(api)
        self.finder.forget(IMAGE)
        self.finder.forget(IMAGE)  # twice: nothing to forget
        self.finder.cloneable(None, api.show(None, IMAGE), self.timings)
        self.assertEqual(2, api.calls.count('locations api'))

    def test_nothing_is_remembered_with_a_ttl_of_0(self):
        self.flags(cloneable_location_ttl=0, group='glance')
        api = FakeGlance(self.raw(), api=[OURS])
        self.cloneable(api)
        self.finder.cloneable(None, api.show(None, IMAGE), self.timings)
        self.assertEqual(2, api.calls.count('locations api'))
        self.finder.forget(IMAGE)  # nothing to forget

    def test_not_cloneable_is_not_remembered(self):
        api = FakeGlance(self.raw(), api=[FILE])
        self.assertEqual((None, None), self.cloneable(api))
        self.finder.cloneable(None, api.show(None, IMAGE), self.timings)
        self.assertEqual(2, api.calls.count('locations api'))

    def test_remembered_location_the_record_no_longer_shows_is_not_used(
            self):
        api = FakeGlance(self.raw(locations=[{'url': OURS}]), api=[])
        self.cloneable(api)
        api.record['locations'] = [{'url': COPY}]
        location, _size = self.finder.cloneable(
            None, api.show(None, IMAGE), self.timings)
        self.assertEqual('glance-ceph', location.pool)

    def test_remembered_location_out_of_glance_s_pools_is_not_used(self):
        api = FakeGlance(self.raw(), api=[OURS])
        self.cloneable(api)
        api.stores = [{'id': 'ceph2', 'pool': 'glance-ceph', 'fsid': FSID}]
        self.finder.pools._read_at = None  # the stores are read again
        api.api = [COPY]
        location, _size = self.finder.cloneable(
            None, api.show(None, IMAGE), self.timings)
        self.assertEqual('glance-ceph', location.pool)

    def test_empty_record_locations_are_not_the_whole_story(self):
        # Glance shows [] when its get_image_location policy says no.
        api = FakeGlance(self.raw(locations=[]), api=[OURS])
        location, _size = self.cloneable(api)
        self.assertEqual(IMAGE, location.image)

    def test_api_refusal_is_not_cloneable_logged_once_per_image(self):
        for why in ('Glance forbids its locations API',
                    'the image is not visible to imaged',
                    'Glance has no locations API'):
            self.flags(rbd_store_name='ceph', group='glance')
            api = FakeGlance(self.raw(), api=why)
            self.assertEqual((None, None), self.cloneable(api))
            self.finder.cloneable(None, api.show(None, IMAGE), self.timings)
            self.assertNotIn('copy ceph', api.calls)  # blind: no copy
            lines = [line for line in self.log.output.splitlines()
                     if why in line]
            self.assertEqual(['INFO', 'DEBUG'],
                             [line.split()[0] for line in lines])

    def test_other_cluster_is_not_cloneable(self):
        api = FakeGlance(self.raw(), api=[ELSEWHERE])
        self.assertEqual((None, None), self.cloneable(api))
        self.assertEqual([], self.storage.probed)  # never opened
        self.assertEqual(0, api.stores_read)

    def assert_refused(self, api, pool):
        e = self.assertRaises(exception.ImageUnacceptable, self.cloneable,
                              api)
        self.assertIn('Ceph pool %s' % pool, str(e))
        self.assertIn(IMAGE, str(e))
        self.assertEqual([], self.storage.probed)  # nothing opened
        self.assertNotIn('copy ceph', api.calls)
        self.assertIn('WARNING Image %s has a location in pool %s' %
                      (IMAGE, pool), self.log.output)

    def assert_names_another(self, api, named):
        e = self.assertRaises(exception.ImageUnacceptable, self.cloneable,
                              api)
        self.assertIn(IMAGE, str(e))
        self.assertIn('names %s' % named, str(e))
        self.assertEqual([], self.storage.probed)  # nothing opened
        self.assertNotIn('copy ceph', api.calls)
        self.assertIn("WARNING Image %s has a location in Glance's pool" %
                      IMAGE, self.log.output)

    def test_location_naming_another_glance_image_is_refused(self):
        # An image owner who may set locations (show_multiple_locations)
        # points hers at another project's image in Glance's own pool.
        theirs = 'rbd://%s/images/their-private-image/snap' % FSID
        self.storage.cloneable.add(theirs)
        self.flags(rbd_store_name='ceph', group='glance')
        self.assert_names_another(
            FakeGlance(self.raw(locations=[{'url': theirs}])),
            'their-private-image@snap')

    def test_location_naming_another_image_from_the_api_is_refused(self):
        theirs = 'rbd://%s/glance-ceph/their-private-image/snap' % FSID
        self.storage.cloneable.add(theirs)
        self.assert_names_another(FakeGlance(self.raw(), api=[OURS, theirs]),
                                  'their-private-image@snap')

    def test_another_snapshot_of_the_image_itself_is_refused(self):
        # Glance's store and imaged's copies name the snapshot "snap";
        # any other snapshot is not what Glance registered.
        other = 'rbd://%s/images/%s/older' % (FSID, IMAGE)
        self.storage.cloneable.add(other)
        self.assert_names_another(
            FakeGlance(self.raw(direct_url=other)), '%s@older' % IMAGE)

    def test_location_naming_the_image_in_another_glance_pool_is_cloned(self):
        # The copy in Glance's second store (copy-image, or the copy
        # imaged registered for a snapshot) is named after the image too.
        location, _size = self.cloneable(FakeGlance(self.raw(), api=[COPY]))
        self.assertEqual(('glance-ceph', IMAGE, 'snap'),
                         (location.pool, location.image, location.snapshot))

    def test_location_in_our_own_pool_is_refused(self):
        # Another instance's disk, snapshotted: never someone's root disk.
        disk = 'rbd://%s/vms/other-instance_disk/snap' % FSID
        self.storage.cloneable.add(disk)
        self.flags(rbd_store_name='ceph', group='glance')
        self.assert_refused(FakeGlance(self.raw(), api=[disk]), 'vms')

    def test_location_in_a_pool_glance_does_not_name_is_refused(self):
        volume = 'rbd://%s/volumes/volume-1/snap' % FSID
        self.storage.cloneable.add(volume)
        # Even beside a good location: the record is not to be trusted.
        self.assert_refused(
            FakeGlance(self.raw(locations=[{'url': OURS}, {'url': volume}])),
            'volumes')

    def test_record_of_a_non_raw_image_is_checked_too(self):
        disk = 'rbd://%s/vms/other-instance_disk/snap' % FSID
        self.assert_refused(
            FakeGlance(self.raw(disk_format='qcow2', direct_url=disk)),
            'vms')

    def test_stores_of_another_cluster_do_not_count(self):
        api = FakeGlance(self.raw(), api=[COPY])
        api.stores = [{'id': 'ceph', 'pool': 'images', 'fsid': FSID},
                      {'id': 'far', 'pool': 'glance-ceph', 'fsid': 'other'}]
        self.assert_refused(api, 'glance-ceph')

    def test_store_without_fsid_counts_only_if_rbd_store_pools_says(self):
        # It may be another cluster's: a pool of the same name in ours is
        # not Glance's unless the operator says so.
        api = FakeGlance(self.raw(), api=[COPY])
        api.stores = [{'id': 'ceph', 'pool': 'glance-ceph', 'fsid': None}]
        self.assert_refused(api, 'glance-ceph')
        self.assertEqual([], self.storage.probed)
        self.flags(rbd_store_pools=['images', 'glance-ceph'], group='glance')
        location, _size = self.cloneable(api)
        self.assertEqual('glance-ceph', location.pool)

    def test_without_stores_detail_the_configured_pools(self):
        api = FakeGlance(self.raw(), api=[COPY])
        api.stores = None  # no multistore, an older Glance, a 403
        self.assert_refused(api, 'glance-ceph')  # default: images only
        self.flags(rbd_store_pools=['images', 'glance-ceph'], group='glance')
        location, _size = self.cloneable(api)
        self.assertEqual('glance-ceph', location.pool)

    def test_our_own_pool_is_never_glance_s(self):
        disk = 'rbd://%s/vms/other-instance_disk/snap' % FSID
        api = FakeGlance(self.raw(), api=[disk])
        api.stores = None
        self.flags(rbd_store_pools=['images', 'vms'], group='glance')
        self.assert_refused(api, 'vms')
        api.stores = [{'id': 'bad', 'pool': 'vms', 'fsid': FSID}]
        self.assert_refused(api, 'vms')

    def test_stores_are_asked_at_most_every_ttl(self):
        api = FakeGlance(self.raw(), api=[OURS])
        clock = [0.0]
        self.cloneable(api)
        pools = locations.GlancePools(self.conf, api, clock=lambda: clock[0])
        for when in (0.0, 10.0, locations.STORES_TTL):
            clock[0] = when
            self.assertEqual({'images', 'glance-ceph'}, pools.allowed(FSID))
        self.assertEqual(2, api.stores_read)  # one for cloneable() above
        clock[0] = locations.STORES_TTL + 1
        pools.allowed(FSID)
        self.assertEqual(3, api.stores_read)

    def test_missing_snapshot_tries_the_next_location(self):
        self.storage.cloneable.discard(COPY)
        gone = COPY
        api = FakeGlance(self.raw(locations=[{'url': gone},
                                             {'url': OURS}]))
        location, _size = self.cloneable(api)
        self.assertEqual('images', location.pool)
        self.assertEqual([gone, OURS], self.storage.probed)

    def test_missing_snapshot_everywhere_is_not_cloneable(self):
        self.storage.cloneable.discard(COPY)
        gone = COPY
        api = FakeGlance(self.raw(), api=[gone])
        self.assertEqual((None, None), self.cloneable(api))

    def test_ceph_error_while_probing_is_typed_not_a_download(self):
        self.flags(rbd_store_name='ceph', group='glance')
        self.storage.error = exception.BackendUnavailable(
            backend='Ceph', reason='osd op timed out')
        api = FakeGlance(self.raw(), api=[OURS])
        self.assertRaises(exception.BackendUnavailable, self.cloneable, api)
        self.assertNotIn('copy ceph', api.calls)
        self.assertNotIn('rbd_store_name', self.log.output)

    def test_copy_image_then_clone_of_the_copy(self):
        self.flags(rbd_store_name='ceph', group='glance')
        api = FakeGlance(self.raw(), api=[FILE])
        location, _size = self.cloneable(api)
        self.assertEqual(COPY, rbd_location.format_rbd_location(*location))
        self.assertEqual(['show', 'locations api', 'show', 'copy ceph',
                          'show', 'locations api'], api.calls)
        self.assertEqual(['locations api', 'copy-image'], self.timings.steps)

    def test_copy_with_record_locations_reads_the_record_again(self):
        self.flags(rbd_store_name='ceph', group='glance')
        api = FakeGlance(self.raw(locations=[{'url': FILE}]), api=[])

        def copy_to_store(image_id, store, context=None):
            api.record['stores'] += ',ceph'
            api.record['locations'].append({'url': COPY})
            return glance.COPY_STARTED, None
        api.copy_to_store = copy_to_store
        location, _size = self.cloneable(api)
        self.assertEqual('glance-ceph', location.pool)
        self.assertNotIn('locations api', api.calls)

    def test_no_store_name_never_copies(self):
        api = FakeGlance(self.raw(), api=[FILE])
        self.assertEqual((None, None), self.cloneable(api))
        self.assertNotIn('copy ceph', api.calls)

    def assert_falls_back(self, api, step):
        self.flags(rbd_store_name='ceph', group='glance')
        self.assertEqual((None, None), self.cloneable(api))
        self.assertEqual(['locations api', step], self.timings.steps)
        self.assertIn('downloading it instead', self.log.output)

    def test_copy_refused_falls_back_to_download(self):
        api = FakeGlance(self.raw(), api=[FILE],
                         copy_answer=(glance.COPY_REFUSED, 'policy'))
        self.assert_falls_back(api, 'copy-image refused')

    def test_copy_failed_falls_back_to_download(self):
        api = FakeGlance(self.raw(), api=[FILE])
        api.copy_to_store = lambda *a, **k: (
            api.record.update(os_glance_failed_import='ceph') or
            (glance.COPY_STARTED, None))
        self.assert_falls_back(api, 'copy-image failed')

    def test_copy_timeout_falls_back_to_download(self):
        api = FakeGlance(self.raw(), api=[FILE])
        api.copy_to_store = lambda *a, **k: (
            api.record.update(os_glance_importing_to_stores='ceph') or
            (glance.COPY_STARTED, None))
        self.assert_falls_back(api, 'copy-image timed out')
        self.assertEqual(5.0, self.now[0])

    def test_copy_landing_in_another_cluster(self):
        self.flags(rbd_store_name='ceph', group='glance')
        api = FakeGlance(self.raw(), api=[FILE], copy_lands=ELSEWHERE)
        self.assertEqual((None, None), self.cloneable(api))
        self.assertIn('is [glance] rbd_store_name the store in this cluster',
                      self.log.output)

    def test_store_already_holds_it_elsewhere_asks_no_copy(self):
        self.flags(rbd_store_name='ceph', group='glance')
        api = FakeGlance(self.raw(stores='file,ceph'), api=[ELSEWHERE])
        self.assertEqual((None, None), self.cloneable(api))
        self.assertNotIn('copy ceph', api.calls)

    def test_no_location_is_logged_whole(self):
        api = FakeGlance(self.raw(locations=[{'url': SWIFT}]), api=[])
        self.cloneable(api)
        self.assertIn('<swift+https location>', self.log.output)
        self.assertNotIn('s3cr3t', self.log.output)
        self.assertNotIn('tenant', self.log.output)


class RecordURLsTest(base.TestCase):

    @staticmethod
    def record_urls(body):
        return image_record.ImageRecord.from_glance(body, IMAGE).shown_urls()

    def test_locations_else_direct_url(self):
        self.assertEqual(['a', 'b'], self.record_urls(
            {'locations': [{'url': 'a'}, {'url': 'b'}], 'direct_url': 'c'}))
        self.assertEqual(['c'], self.record_urls(
            {'locations': [], 'direct_url': 'c'}))
        self.assertEqual([], self.record_urls(
            {'locations': [{'url': ''}, 'junk', {}]}))
        self.assertEqual([], self.record_urls({}))
