from imaged.storage import location
from tests import base


class ParseRBDLocationTest(base.TestCase):

    def test_four_parts_are_split_and_unquoted(self):
        loc = location.parse_rbd_location('rbd://fs%2Did/images/img%20x/snap')
        self.assertEqual(('fs-id', 'images', 'img x', 'snap'), tuple(loc))

    def test_round_trip_with_format(self):
        url = location.format_rbd_location('f', 'p', 'i/x', 's')
        self.assertEqual(('f', 'p', 'i/x', 's'),
                         tuple(location.parse_rbd_location(url)))

    def test_refusals_name_the_reason(self):
        for url, reason in [
                ('file:///var/lib/glance/images/x', 'not an rbd://'),
                ('http://example/x', 'not an rbd://'),
                (None, 'not an rbd://'),
                ('rbd://fsid/images/img', 'has 3 parts'),
                ('rbd://fsid/images/img/snap/extra', 'has 5 parts'),
                ('rbd://fsid//img/snap', 'empty part'),
                ('rbd://fsid/images/img/', 'empty part')]:
            e = self.assertRaises(location.NotAnRBDLocation,
                                  location.parse_rbd_location, url)
            self.assertIn(reason, str(e), url)
