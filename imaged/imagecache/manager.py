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

"""The image cache manager: an image's bytes, downloaded once, kept for
the disks made from it, and evicted when no longer worth keeping.

Two kinds of cached copy:

* a **base image in Ceph** (``[image_cache] rbd_base_images``; an image in
  another format is converted straight into it): one per pool,
  built by one host while the others wait (:mod:`imaged.storage.bases`),
  cloned into each root disk;
* a **local base file** (:mod:`imaged.imagecache.files`): one per host,
  imported into each root disk; the first disk is written during the
  download itself.

This module decides which sinks a download fills (``image.fetch`` moves the
bytes, ``storage`` writes them); :mod:`imaged.imagecache.eviction` removes
what is no longer used.
"""

import contextlib
import os
from typing import Any, Callable, List

from oslo_log import log as logging
from oslo_utils import units
import tenacity

from imaged import deadline as call_deadline
from imaged import exception
from imaged.image import download
from imaged.image import fetch
from imaged.image import format as image_format
from imaged.imagecache import eviction
from imaged.imagecache import lazy
from imaged import notifications as imaged_notifications
from imaged.storage import partial

LOG = logging.getLogger(__name__)


def _commit_or_abort(new, fill, size):
    try:
        fill()
        new.commit(size)
    except BaseException:
        download.abort_quietly(new)
        raise


class ImageCacheManager:
    """This host's cached copies of images: made, listed, evicted."""

    def __init__(self, conf: Any, glance_api: Any, storage: Any, files: Any,
                 notifications: Any = None, signatures: Any = None) -> None:
        self.conf = conf
        self.storage = storage
        self.files = files
        notifications = notifications or \
            imaged_notifications.Notifications(conf, storage.host)
        self.notifications = notifications
        self.metrics = notifications.metrics
        self.fetcher = fetch.Fetcher(conf, glance_api, notifications,
                                     signatures)
        self.lazy = lazy.LazyFirstDisks(conf, storage, self.fetcher, files,
                                        notifications)
        self.eviction = eviction.Eviction(conf, glance_api, storage, files,
                                          notifications)

    def _wait(self, context):
        """How long a wait of this call may last: its deadline's."""
        return call_deadline.of(context).cap(self.conf.long_rpc_timeout)

    def max_size(self) -> int:
        """The largest virtual size any root disk may hold."""
        return self.conf.max_root_disk_gb * units.Gi

    def needs_local_room(self, image: Any) -> bool:
        """Whether ``image``'s bytes pass through the local cache directory
        (a base file, or a download to convert): then they must fit it."""
        return not self.conf.image_cache.rbd_base_images or \
            image.disk_format not in ('raw', 'iso')

    # -- base images in Ceph --------------------------------------------------

    def with_base(self, context: Any, image: Any, max_size: int,
                  timings: Any,
                  use: Callable[[Any, int], Any] | None = None
                  ) -> tuple[bool, Any]:
        """Run ``use(location, size)`` on ``image``'s complete base in the
        pool (held shared meanwhile), building it first if no host of the
        pool has it.

        Another call's build, for a smaller disk, may have refused the
        image (``ImageTooLarge``): it may fit this one, so this call builds
        it itself, once.

        :param max_size: the largest virtual size the base may have.
        :param use: None to only make sure the base exists.
        :returns: ``(made now, what use returned)``.
        :raises ForeignBaseImage: the pool holds a base imaged did not make.
        """
        def fits_this_call(e):
            return isinstance(e, exception.ImageTooLarge) and \
                e.kwargs.get('size_bytes', max_size) < max_size and \
                e.kwargs.get('virtual_size', max_size + 1) <= max_size

        def again(retry_state):
            LOG.info('Image %s was too large for another call\'s disk (%s '
                     'bytes); building its base for this one', image.id,
                     retry_state.outcome.exception().kwargs.get(
                         'size_bytes'))
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(fits_this_call),
            stop=tenacity.stop_after_attempt(2), before_sleep=again,
            reraise=True)
        if use is not None:
            # [image_cache] lazy_first_disk: None unless it made the disk.
            used = self.lazy.first_disk(context, image, max_size, timings,
                                        use)
            if used is not None:
                return True, used
        made, base_size, used = retrying(self._use_base, context, image,
                                         max_size, timings, use)
        self.files.record(image.id, base_size)
        return made, used

    def _use_base(self, context, image, max_size, timings, use):
        image_id = image.id
        deadline = call_deadline.of(context)
        with self.storage.bases.use(
                image_id,
                lambda: self._build_base(context, image, max_size,
                                         timings),
                deadline) as (base, base_size, made):
            if not made:
                timings.step('base hit')
            self.metrics.base_used(made)
            used = None if use is None else use(base, base_size)
        return made, base_size, used

    def _build_base(self, context, image, max_size, timings):
        """This host is the pool's one builder of the base now."""
        image_id = image.id
        final = self.storage.bases.final_image(image_id)
        with self.files.in_use(image_id), \
                self.files.lock(image_id, self._wait(context)):
            path = self.files.lookup(image_id)
            if path is not None:
                timings.step('cache hit')
                self._import(image_id, path, final, max_size, timings)
            elif image_format.is_raw(image.disk_format):
                self.fetcher.stream(
                    context, image,
                    [lambda size: self.storage.partials.new(final, size)],
                    max_size)
                timings.step('download')
            else:
                self._convert_into(context, image, final, max_size, timings)

    def _convert_into(self, context, image, final, max_size, timings):
        """Download and check a non-raw image, then convert it straight
        into the new image ``final``; no raw file is ever written."""
        image_id = image.id
        got, downloaded = self.fetcher.download_file(
            context, image, lambda: self.files.download_sink(image_id),
            max_size)
        timings.step('download')
        try:
            new = self.storage.partials.new(final, got.virtual_size)
            target = self.storage.qemu_image(*new.target)
            _commit_or_abort(new, lambda: image_format.convert_into_rbd(
                image_id, downloaded, image.disk_format, target, self.conf),
                got.virtual_size)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(downloaded)
        timings.step('convert')

    # -- local base files -----------------------------------------------------

    def with_local_file(self, context: Any, image: Any, max_size: int,
                        timings: Any, disk: Any = None) -> bool:
        """Make sure this host has ``image``'s local base file, downloading
        it once, and fill the new image ``disk`` (a ``FinalImage``) from it.

        A raw image's first disk is written during the download itself.
        :returns: True if the file was downloaded now.
        """
        image_id = image.id
        with self.files.in_use(image_id), \
                self.files.lock(image_id, self._wait(context)):
            path = self.files.lookup(image_id)
            downloaded_now = path is None
            if path is not None:
                timings.step('cache hit')
            elif image_format.is_raw(image.disk_format):
                self.files.check_room(image_id, image.size or 0)
                # The base file first: it commits first.
                makers = [lambda _size: self.files.base_file_sink(image_id)]
                if disk is not None:
                    makers.append(
                        lambda size: self.storage.partials.new(disk, size))
                self.fetcher.stream(context, image, makers, max_size)
                timings.step('download')
                return True
            else:
                if image.virtual_size:
                    self.files.check_room(image_id, image.virtual_size)
                got, downloaded = self.fetcher.download_file(
                    context, image,
                    lambda: self.files.download_sink(image_id), max_size)
                try:
                    # What the download found it expands to, before it is.
                    self.files.check_room(image_id, got.virtual_size)
                except exception.CacheFull:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(downloaded)
                    raise
                path = self.files.install_converted(image, downloaded)
                timings.step('download')
            if disk is not None:
                self._import(image_id, path, disk, max_size, timings)
            return downloaded_now

    def _import(self, image_id, path, disk, max_size, timings):
        """Fill the new image ``disk`` from a checked raw base file."""
        size = os.path.getsize(path)
        if size > max_size:
            raise exception.ImageTooLarge(image_id=image_id,
                                          virtual_size=size,
                                          size_bytes=max_size)
        progress = download.ProgressLog(
            'Import of image %s into %s' % (image_id, disk.name), size,
            self.conf.glance.progress_interval)
        new = self.storage.partials.new(disk, size)
        _commit_or_abort(
            new, lambda: partial.fill_from_file(new, path, progress), size)
        timings.step('import')

    # -- the fleet's calls ----------------------------------------------------

    def prepare(self, context: Any, image: Any, timings: Any) -> str:
        """Make sure a later root disk from ``image`` needs no download.

        :returns: ``'cached'`` if it was downloaded now, else ``'existing'``.
        """
        max_size = self.max_size()
        if self.conf.image_cache.rbd_base_images:
            try:
                made, _used = self.with_base(context, image, max_size,
                                             timings)
                return 'cached' if made else 'existing'
            except exception.ForeignBaseImage as e:
                LOG.warning('Image %s gets no base image in Ceph: %s',
                            image.id, e)
        made = self.with_local_file(context, image, max_size, timings)
        return 'cached' if made else 'existing'

    def list(self) -> list[dict[str, Any]]:
        """This host's base files and the RBD bases it uses."""
        return self.files.list()

    def usage(self) -> dict[str, Any]:
        return self.files.usage()

    def clean(self) -> None:
        """The periodic cleanup (see :mod:`imaged.imagecache.eviction`)."""
        self.eviction.run()

    def purge_image(self, image_id: str,
                    reason: str) -> List[dict[str, str]]:
        return self.eviction.purge_image(image_id, reason)
