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
