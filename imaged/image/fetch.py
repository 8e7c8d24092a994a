"""Getting an image's bytes into a new RBD image (a base or a root disk).

Raw images stream from Glance straight into the new image (and into a
local base file only when the caller keeps one). Other formats are
downloaded to a file and checked; then qemu-img converts them straight into
the new image when no local base file is kept (one pass, no raw copy), or
into a raw base file that then fills the new image. The caller holds the
cache's lock on the image, so an image is downloaded once per host at a
time.
"""

import contextlib
import os
import threading
import time

from oslo_log import log as logging
from oslo_utils import units

from imaged import exception
from imaged.i18n import _
from imaged.image import body as image_body
from imaged.image import download
from imaged.image import format as image_format
from imaged import malloc
from imaged import notifications as imaged_notifications
from imaged.storage import partial

LOG = logging.getLogger(__name__)


def _abort_quietly(sink):
    """Abort a sink without hiding the error that made us abort."""
    try:
        sink.abort()
    except Exception:
        LOG.warning('Could not abort a partial copy; it is removed by the '
                    'next sweep', exc_info=True)


class Fetcher:
    """Fills new images with an image's bytes, downloading them once."""

    def __init__(self, conf, glance_api, cache, writer, notifications=None):
        self.conf = conf
        self.glance = glance_api
        self.cache = cache
        self.writer = writer
        self.notifications = notifications  # image.fetch.*; None: none
        self._download_slots = threading.BoundedSemaphore(
            conf.image_cache.max_concurrent_downloads)

    def max_size(self):
        """The largest virtual size any root disk may hold."""
        return self.conf.max_root_disk_gb * units.Gi

    def fill(self, context, image, spec, max_virtual_size, keep_file,
             timings):
        """Make the finished image ``spec`` from ``image``'s bytes.

        :param spec: a ``partial.PartialSpec``, or None to only make sure
            the local cache has what a later disk needs.
        :param keep_file: keep a local base file of a raw image too.
        :returns: the image's size in bytes.
        """
        image_id = image['id']
        raw = image_format.QEMU_FORMATS.get(image['disk_format']) == 'raw'
        path = self.cache.lookup(image_id)
        if path is None and raw:
            got = self._stream(context, image, spec, max_virtual_size,
                               keep_file)
            timings.step('download')
            if not keep_file:
                self.cache.record(image_id, got.size)
            return got.size
        if path is None and spec is not None and not keep_file:
            return self._convert_into(context, image, spec,
                                      max_virtual_size, timings)
        if path is None:
            got, downloaded = self._download_file(context, image,
                                                  max_virtual_size)
            path = self.cache.install_converted(image, downloaded)
            timings.step('download')
        else:
            timings.step('cache hit')
        return self.fill_from_file(image, path, spec, max_virtual_size,
                                   timings)

    @contextlib.contextmanager
    def _download_slot(self, image_id):
        timeout = self.conf.long_rpc_timeout
        if not self._download_slots.acquire(timeout=timeout):
            raise exception.Timeout(
                what=_('a free download slot for image %s') % image_id,
                seconds=timeout)
        LOG.info('Downloading image %s', image_id)
        try:
            yield
        finally:
            self._download_slots.release()
            malloc.release_free_memory()

    def _fetching(self, image):
        return imaged_notifications.FetchReport(
            self.notifications, image['id'], image.get('size'))

    def _convert_into(self, context, image, spec, max_virtual_size,
                      timings):
        """Download and check a non-raw image, then convert it straight
        into the new image ``spec``; no raw file is ever written."""
        image_id = image['id']
        got, downloaded = self._download_file(context, image,
                                              max_virtual_size)
        timings.step('download')
        try:
            new = self.writer.new(spec, got.virtual_size)
            try:
                image_format.convert_into_rbd(
                    image_id, downloaded, image['disk_format'],
                    self.writer.conn.pool, new.part, self.conf)
                new.commit(got.virtual_size)
            except BaseException:
                _abort_quietly(new)
                raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(downloaded)
        timings.step('convert')
        self.cache.record(image_id, got.virtual_size)
        return got.virtual_size

    def _body(self, context, image, deadline):
        return image_body.ImageBody.open(
            self.glance, context, image['id'], self.conf,
            size=image.get('size'), deadline=deadline)

    def _stream(self, context, image, spec, max_virtual_size, keep_file):
        """Stream a raw image into ``spec`` (and the base file)."""
        image_id = image['id']
        size = image.get('size') or max_virtual_size or self.max_size()

        def sinks():
            made = []
            try:
                if keep_file or spec is None:
                    made.append(self.cache.base_file_sink(image_id))
                if spec is not None:
                    made.append(self.writer.new(spec, size))
            except BaseException:
                for sink in made:
                    _abort_quietly(sink)
                raise
            return made  # the base file first: it commits first
        return self._download(context, image, sinks, max_virtual_size)[0]

    def _download_file(self, context, image, max_virtual_size):
        """Download an image that needs converting into a temporary file."""
        got, [sink] = self._download(
            context, image,
            lambda: [self.cache.download_sink(image['id'])],
            max_virtual_size)
        return got, sink.dest

    def _download(self, context, image, new_sinks, max_virtual_size):
        """One download of ``image`` into fresh sinks for each attempt.

        :returns: ``(what the stream found, the committed sinks)``.
        """
        image_id = image['id']
        deadline = time.monotonic() + self.conf.glance.download_timeout
        with self._download_slot(image_id), self._fetching(image) as report:
            for attempt in download.attempts(image_id,
                                             self.conf.glance.num_retries):
                with attempt:
                    report.attempt()
                    sinks = new_sinks()
                    try:
                        with self._body(context, image, deadline) as blocks:
                            got = download.stream(
                                image, report.count(blocks), sinks,
                                self.conf, max_virtual_size)
                        for sink in sinks:
                            sink.commit(got.size)
                        return got, sinks
                    except BaseException:
                        for sink in sinks:
                            _abort_quietly(sink)
                        raise

    def fill_from_file(self, image, path, spec, max_virtual_size, timings):
        """Fill the new image ``spec`` from a checked raw base file."""
        image_id = image['id']
        size = os.path.getsize(path)
        if max_virtual_size is not None and size > max_virtual_size:
            raise exception.ImageTooLarge(image_id=image_id,
                                          virtual_size=size,
                                          size_bytes=max_virtual_size)
        if spec is None:
            return size
        progress = download.ProgressLog(
            'Import of image %s into %s' % (image_id, spec.name), size,
            self.conf.glance.progress_interval)
        new = self.writer.new(spec, size)
        try:
            partial.fill_from_file(new, path, progress)
            new.commit(size)
        except BaseException:
            _abort_quietly(new)
            raise
        timings.step('import')
        return size
