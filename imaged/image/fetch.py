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

"""Getting an image's bytes out of Glance, once, into the caller's sinks.

A raw image streams from Glance straight into whatever sinks the caller
makes for it (a new RBD image, a local base file, or both); an image that
needs converting is downloaded, checked, into one temporary file the caller
converts. Each attempt starts with fresh sinks; the bytes of a failed one
were never verified. A sink is a :class:`imaged.image.download.Sink`. The
caller (the image cache manager) holds the cache's lock on the image, so an
image is downloaded once per host at a time.
"""

import contextlib
import threading
import time
from typing import Any, Callable

from oslo_log import log as logging

from imaged import deadline as call_deadline
from imaged import exception
from imaged.i18n import _
from imaged.image import body as image_body
from imaged.image import download
from imaged import malloc
from imaged import notifications as imaged_notifications

LOG = logging.getLogger(__name__)


class Fetcher:
    """Downloads images: bounded at once, retried, reported."""

    def __init__(self, conf: Any, glance_api: Any, notifications: Any = None,
                 signatures: Any = None) -> None:
        self.conf = conf
        self.glance = glance_api
        self.notifications = notifications  # image.fetch.*; None: none
        # An imaged.image.signature.Signatures; None: none verified.
        self.signatures = signatures
        self._download_slots = threading.BoundedSemaphore(
            conf.image_cache.max_concurrent_downloads)

    @contextlib.contextmanager
    def _download_slot(self, context, image_id):
        """A turn among ``max_concurrent_downloads``, waited for within the
        call's deadline."""
        timeout = call_deadline.of(context).cap(self.conf.long_rpc_timeout)
        queued = time.monotonic()
        if not self._download_slots.acquire(timeout=timeout):
            raise exception.Timeout(
                what=_('a free download slot for image %s') % image_id,
                seconds=round(time.monotonic() - queued, 1))
        if self.notifications is not None:
            self.notifications.metrics.waited('download_slot',
                                              time.monotonic() - queued)
        LOG.info('Downloading image %s', image_id)
        try:
            yield
        finally:
            self._download_slots.release()
            malloc.release_free_memory()

    def _fetching(self, image):
        return imaged_notifications.FetchReport(
            self.notifications, image.id, image.size)

    def _body(self, context, image, deadline):
        return image_body.ImageBody.open(
            self.glance, context, image.id, self.conf, size=image.size,
            deadline=deadline)

    def stream(self, context: Any, image: Any,
               sink_makers: list[Callable[[int], Any]],
               max_virtual_size: int) -> Any:
        """Stream a raw image into new sinks, one per ``sink_makers``.

        :param sink_makers: ``make(size)`` callables, called at each attempt
            with the size to make room for; their sinks commit in this
            order.
        :returns: what the stream found (``download.Downloaded``).
        """
        size = image.size or max_virtual_size

        def sinks():
            made = []
            try:
                for make in sink_makers:
                    made.append(make(size))
            except BaseException:
                for sink in made:
                    download.abort_quietly(sink)
                raise
            return made
        return self._download(context, image, sinks, max_virtual_size)[0]

    def download_file(self, context: Any, image: Any,
                      new_sink: Callable[[], Any],
                      max_virtual_size: int) -> tuple[Any, Any]:
        """Download an image that needs converting into the file sink
        ``new_sink()`` makes; returns ``(what the stream found, the
        committed file's path)``."""
        got, [sink] = self._download(context, image,
                                     lambda: [new_sink()], max_virtual_size)
        return got, sink.dest

    def _download(self, context, image, new_sinks, max_virtual_size):
        """One download of ``image`` into fresh sinks for each attempt.

        :returns: ``(what the stream found, the committed sinks)``.
        """
        image_id = image.id
        deadline = time.monotonic() + self.conf.glance.download_timeout
        signed = None
        if self.signatures is not None:
            # Refuses an unsigned or untrusted image before any byte moves.
            signed = self.signatures.check(context, image)
        with self._download_slot(context, image_id), \
                self._fetching(image) as report:
            for attempt in download.attempts(image_id,
                                             self.conf.glance.num_retries):
                with attempt:
                    report.attempt()
                    sinks = []
                    verifier = signed.verifier() if signed else None
                    try:
                        sinks = new_sinks()
                        with self._body(context, image, deadline) as blocks:
                            got = download.stream(
                                image, report.count(blocks), sinks,
                                self.conf, max_virtual_size, verifier)
                        if signed is not None:
                            self.signatures.downloaded(signed, verifier)
                        for sink in sinks:
                            sink.commit(got.size)
                        return got, sinks
                    except BaseException as e:
                        for sink in sinks:
                            download.abort_quietly(sink)
                        if isinstance(e, exception.ImageSignatureInvalid):
                            self.signatures.downloaded(signed, verifier, e)
                        raise
