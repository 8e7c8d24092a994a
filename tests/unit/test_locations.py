"""CloneableLocations: record, then the locations API, then copy-image."""

import logging

import fixtures

from imaged.image import glance
from imaged.image import locations
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
    """probe_location() over the snapshots of one cluster."""

    def __init__(self, *cloneable):
        self.cloneable = set(cloneable)
        self.probed = []

    def probe_location(self, url):
        self.probed.append(url)
        if url in self.cloneable:
            return rbd_location.parse_rbd_location(url), 4096, None
        return None, None, 'not in our cluster'


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

    def show(self, context, image_id, as_service=False):
        self.calls.append('show')
        return dict(self.record)

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
        self.assertEqual([ELSEWHERE], self.storage.probed)

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

    def test_locations_else_direct_url(self):
        self.assertEqual(['a', 'b'], locations.record_urls(
            {'locations': [{'url': 'a'}, {'url': 'b'}], 'direct_url': 'c'}))
        self.assertEqual(['c'], locations.record_urls(
            {'locations': [], 'direct_url': 'c'}))
        self.assertEqual([], locations.record_urls(
            {'locations': [{'url': ''}, 'junk', {}]}))
        self.assertEqual([], locations.record_urls({}))
