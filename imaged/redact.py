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

"""What of an image location may be written to a log.

Glance location URLs may carry credentials (legacy ``swift+https://user:key@``
URLs), so no log line holds one whole: an ``rbd://`` URL is logged as its
fsid/pool/image/snapshot, any other as its scheme only.
"""

import re
import urllib.parse

_SCHEME = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]{0,31}):')
# A Ceph fsid is a UUID; anything else in its place may be a credential.
_FSID = re.compile(r'^[0-9A-Fa-f-]{1,64}$')
_RBD_PART = re.compile(r'^[^@:/\x00-\x1f\x7f]{1,256}$')


def location(url):
    """``url`` as it may appear in a log line."""
    if not isinstance(url, str):
        return '<%s location>' % type(url).__name__
    match = _SCHEME.match(url)
    if match is None:
        return '<location without a scheme>'
    scheme = match.group(1).lower()
    if scheme == 'rbd':
        parts = [urllib.parse.unquote(p) for p in
                 url[len('rbd://'):].split('/')] if url[3:6] == '://' else []
        if (len(parts) == 4 and _FSID.match(parts[0]) and
                all(_RBD_PART.match(p) for p in parts[1:])):
            return 'rbd://' + '/'.join(
                urllib.parse.quote(p, safe='') for p in parts)
        return '<malformed rbd location>'
    return '<%s location>' % scheme
