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

"""Glance's answers other than image data, bounded as a whole and in size.

``requests`` bounds each wait for a byte (``[glance] timeout``), never a
whole answer: a Glance that trickles a byte every 59 s would hold a call
for ever, and a body of any size would be read into memory. The session's
:class:`BoundedAdapter` reads each such body itself, piece by piece,
within ``[glance] request_timeout`` and ``max_response_bytes``. A streamed
request (an image's data) is left to its reader, which has its own
deadline (``download_timeout``).
"""

import time
from typing import Any

from keystoneauth1 import session as ks_session

from imaged import exception
from imaged.i18n import _

PIECE = 64 * 1024


class BoundedAdapter(ks_session.TCPKeepAliveAdapter):
    """keystoneauth's adapter (TCP keep-alive), with bounded answers."""

    def __init__(self, conf: Any, *args: Any, clock: Any = time.monotonic,
                 **kwargs: Any) -> None:
        self.conf = conf
        self._clock = clock
        super().__init__(*args, **kwargs)

    # requests' adapter interface (typed by requests' stubs).
    def send(self, request, stream=False, **kwargs):
        if stream:
            return super().send(request, stream=True, **kwargs)
        opts = self.conf.glance
        started = self._clock()
        what = '%s %s' % (request.method, request.path_url.split('?')[0])
        response = super().send(request, stream=True, **kwargs)
        try:
            response._content = self._read(response, what, started,
                                           opts.request_timeout,
                                           opts.max_response_bytes)
            response._content_consumed = True
        finally:
            # All read: the connection goes back to the pool; else it is
            # closed, never reused half-read.
            response.close()
        return response

    def _read(self, response, what, started, limit, max_bytes):
        def check():
            waited = self._clock() - started
            if waited > limit:
                raise exception.Timeout(
                    what=_("Glance's answer to %s") % what,
                    seconds=round(waited, 1))
        check()  # the headers came too late already
        declared = response.headers.get('Content-Length')
        if declared is not None and declared.isdigit() and \
                int(declared) > max_bytes:
            raise exception.GlanceResponseTooLarge(request=what,
                                                   limit=max_bytes)
        pieces, size = [], 0
        for piece in _pieces(response):
            size += len(piece)
            if size > max_bytes:
                raise exception.GlanceResponseTooLarge(request=what,
                                                       limit=max_bytes)
            check()
            pieces.append(piece)
        return b''.join(pieces)


def _pieces(response):
    """The body, in pieces as they arrive (urllib3 1.26's ``stream`` waits
    for a whole piece: a trickle would be checked only at its end)."""
    fp = getattr(response.raw, '_fp', None)
    encoding = response.headers.get('Content-Encoding', 'identity')
    if encoding.lower() != 'identity' or not hasattr(fp, 'read1'):
        # Compressed: urllib3 decodes it, in small pieces.
        yield from response.raw.stream(1024, decode_content=True)
        return
    while True:
        piece = fp.read1(PIECE)
        if not piece:
            return
        yield piece
