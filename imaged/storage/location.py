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

"""Parsing of Glance's ``rbd://`` image locations."""

import collections
import urllib.parse

RBDLocation = collections.namedtuple(
    'RBDLocation', ['fsid', 'pool', 'image', 'snapshot'])


class NotAnRBDLocation(ValueError):
    """The URL is not a cloneable ``rbd://fsid/pool/image/snapshot``."""


def parse_rbd_location(url: object) -> RBDLocation:
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


def format_rbd_location(fsid: str, pool: str, image: str,
                        snapshot: str) -> str:
    parts = (urllib.parse.quote(p, safe='') for p in
             (fsid, pool, image, snapshot))
    return 'rbd://' + '/'.join(parts)
