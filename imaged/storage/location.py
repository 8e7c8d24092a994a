"""Parsing of Glance's ``rbd://`` image locations."""

import collections
import urllib.parse

RBDLocation = collections.namedtuple(
    'RBDLocation', ['fsid', 'pool', 'image', 'snapshot'])


class NotAnRBDLocation(ValueError):
    """The URL is not a cloneable ``rbd://fsid/pool/image/snapshot``."""


def parse_rbd_location(url):
    """Split ``rbd://<fsid>/<pool>/<image>/<snapshot>`` into its parts.

    :raises NotAnRBDLocation: naming why the URL is not one.
    """
    prefix = 'rbd://'
    if not isinstance(url, str) or not url.startswith(prefix):
        raise NotAnRBDLocation('not an rbd:// URL')
    pieces = [urllib.parse.unquote(p) for p in url[len(prefix):].split('/')]
    if len(pieces) != 4:
        raise NotAnRBDLocation(
            'has %d parts, not fsid/pool/image/snapshot' % len(pieces))
    if not all(pieces):
        raise NotAnRBDLocation('has an empty part')
    return RBDLocation(*pieces)


def format_rbd_location(fsid, pool, image, snapshot):
    parts = (urllib.parse.quote(p, safe='') for p in
             (fsid, pool, image, snapshot))
    return 'rbd://' + '/'.join(parts)
