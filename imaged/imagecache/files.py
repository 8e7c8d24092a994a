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

"""This host's image files: checked raw base files, records of RBD bases.

A base file ``<base_dir>/<image_id>`` only ever appears by an atomic rename,
after its bytes matched Glance's hash, passed the format checks and were
converted to raw and fsynced. Everything in between lives in
``<base_dir>/.tmp`` (whose leftovers :mod:`imaged.leftovers` removes), so
no partial file can be mistaken for an image.

An image streamed straight into a base image in Ceph leaves no file here,
only a small record ``<base_dir>/.rbd/<image_id>`` (its size; its mtime is
this host's last use), so that ``list_cached_images`` and the age and LRU
rules see it too.
"""

import collections
import contextlib
import datetime
import os
import threading
import time
from typing import Any, Iterator
import uuid

from oslo_concurrency import lockutils
from oslo_log import log as logging
from oslo_utils import units

from imaged import exception
from imaged.i18n import _
from imaged.image import format as image_format
from imaged.imagecache import file_sink

LOG = logging.getLogger(__name__)

TMP_DIR = '.tmp'
RECORD_DIR = '.rbd'
FILE, RBD = 'file', 'rbd'

_Entry = collections.namedtuple('_Entry', ['image_id', 'where', 'path',
                                           'size', 'used_bytes', 'mtime'])


class BaseFiles:
    """Base files and RBD base records of this host, keyed by image id.

    What to keep and what to evict is the image cache manager's call
    (:mod:`imaged.imagecache.eviction`); this class only keeps the files
    right.
    """

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        self.base_dir = os.path.abspath(conf.image_cache.base_dir)
        self.tmp_dir = os.path.join(self.base_dir, TMP_DIR)
        self.record_dir = os.path.join(self.base_dir, RECORD_DIR)
        self._users: collections.Counter[str] = collections.Counter()
        self._users_lock = threading.Lock()
        self._locks = lockutils.Semaphores()

    # -- layout ---------------------------------------------------------------

    def base_image_path(self, image_id: str) -> str:
        """Where the base file of ``image_id`` lives; never outside the cache.

        ``image_id`` must be a canonical UUID (the manager checks); this is
        the second line of defence.
        """
        try:
            canonical = str(uuid.UUID(image_id))
        except (TypeError, ValueError, AttributeError):
            canonical = None
        if canonical is None or canonical != image_id:
            raise exception.InvalidInput(argument='image_id',
                                         reason=_('not a UUID'))
        return os.path.join(self.base_dir, image_id)

    def _record_path(self, image_id):
        return os.path.join(self.record_dir,
                            os.path.basename(self.base_image_path(image_id)))

    def prepare(self) -> None:
        """Create the directories (what an earlier run left in the scratch
        directory goes by :mod:`imaged.leftovers`)."""
        try:
            os.makedirs(self.tmp_dir, mode=0o750, exist_ok=True)
            os.makedirs(self.record_dir, mode=0o750, exist_ok=True)
        except OSError as e:
            raise file_sink.cache_error(self.base_dir, '-', e)

    def remove_scratch(self, older_than: float | None = None,
                       now: float | None = None) -> list[str]:
        """Remove scratch files: all of them (at start-up, before any call
        runs), or those unchanged for ``older_than`` seconds.

        :returns: the names removed.
        """
        now = time.time() if now is None else now
        removed: list[str] = []
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return removed
        except OSError as e:
            raise file_sink.cache_error(self.base_dir, '-', e)
        for name in sorted(names):
            path = os.path.join(self.tmp_dir, name)
            try:
                if older_than is not None and \
                        now - os.stat(path).st_mtime < older_than:
                    continue
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise file_sink.cache_error(self.base_dir, '-', e)
            removed.append(name)
        return removed

    def scratch_path(self, image_id: str, kind: str) -> str:
        """A new path in the cache's scratch directory (what a killed
        agent left there goes at the next start: :mod:`imaged.leftovers`)."""
        return self._tmp_path(image_id, kind)

    def _tmp_path(self, image_id, kind):
        return os.path.join(self.tmp_dir, '%s.%s.%s' % (
            image_id, kind, uuid.uuid4().hex[:8]))

    # -- use ------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, image_id: str,
             timeout: float | None = None) -> Iterator[None]:
        """An inter-process lock on ``image_id``'s download on this host.

        :param timeout: seconds to wait for it (the caller's deadline);
            None for ``[DEFAULT] long_rpc_timeout``.
        :raises Timeout: when not had within ``timeout`` (the caller has
            given up by then), saying how long it waited.
        """
        if timeout is None:
            timeout = self.conf.long_rpc_timeout
        started = time.monotonic()
        deadline = started + timeout

        def busy():
            return exception.Timeout(
                what=_('the download of image %s on this host') % image_id,
                seconds=round(time.monotonic() - started, 1))
        local = self._locks.get(image_id)
        if not local.acquire(timeout=timeout):
            raise busy()
        try:
            external = lockutils.external_lock(
                'image-%s' % image_id, lock_file_prefix='imaged-',
                lock_path=self.conf.oslo_concurrency.lock_path)
            if not external.acquire(
                    timeout=max(0.0, deadline - time.monotonic())):
                raise busy()
            try:
                yield
            finally:
                external.release()
        finally:
            local.release()

    @contextlib.contextmanager
    def in_use(self, image_id: str) -> Iterator[None]:
        """While the block runs, the image's base file is never removed."""
        with self._users_lock:
            self._users[image_id] += 1
        try:
            yield
        finally:
            with self._users_lock:
                self._users[image_id] -= 1
                if not self._users[image_id]:
                    del self._users[image_id]

    def lookup(self, image_id: str) -> str | None:
        """The path of ``image_id``'s base file (recording a use), or None."""
        path = self.base_image_path(image_id)
        try:
            os.utime(path)  # mtime records the last use
            return path
        except FileNotFoundError:
            return None

    def base_file_sink(self, image_id: str) -> file_sink.FileSink:
        """A sink that becomes the (raw) base file of ``image_id``."""
        return file_sink.FileSink(self.base_dir, image_id,
                                  self._tmp_path(image_id, 'download'),
                                  self.base_image_path(image_id),
                                  durable=True)

    def download_sink(self, image_id: str) -> file_sink.FileSink:
        """A sink for a download that still needs converting."""
        return file_sink.FileSink(self.base_dir, image_id,
                                  self._tmp_path(image_id, 'download'),
                                  self._tmp_path(image_id, 'downloaded'),
                                  durable=False)

    def install_converted(self, image: Any, downloaded: Any) -> str:
        """Convert a checked download to a raw base file; returns its path."""
        image_id = image.id
        tmp = self._tmp_path(image_id, 'raw')
        started = time.monotonic()
        try:
            image_format.convert_to_raw(image_id, downloaded, tmp,
                                        image.disk_format, self.conf,
                                        cache_dir=self.base_dir)
            LOG.info('Converted image %s from %s to raw in %.1fs', image_id,
                     image.disk_format, time.monotonic() - started)
            path = self.base_image_path(image_id)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            file_sink.fsync_dir(self.base_dir)
            return path
        except OSError as e:
            raise file_sink.cache_error(self.base_dir, image_id, e)
        finally:
            for name in (tmp, downloaded):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)

    def record(self, image_id: str, size: int) -> None:
        """Record that this host uses the RBD base of ``image_id``."""
        path = self._record_path(image_id)
        try:
            with open(path, 'w') as f:
                f.write('%d\n' % size)
        except OSError as e:
            raise file_sink.cache_error(self.base_dir, image_id, e)

    def forget(self, image_id: str) -> None:
        """Drop the record of ``image_id``'s RBD base (it is gone)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._record_path(image_id))

    # -- listing and cleanup ------------------------------------------------

    def entries(self, wheres: tuple[str, ...] = (FILE, RBD)
                ) -> list[_Entry]:
        """Every base file and RBD base record, oldest first."""
        entries = []
        for where, directory in ((FILE, self.base_dir),
                                 (RBD, self.record_dir)):
            if where not in wheres:
                continue
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in names:
                path = os.path.join(directory, name)
                try:
                    if str(uuid.UUID(name)) != name:
                        continue
                    st = os.stat(path)
                    size = st.st_size
                    if where == RBD:
                        with open(path) as f:
                            size = int(f.read().strip() or 0)
                except (ValueError, OSError):
                    continue
                used = st.st_blocks * 512 if where == FILE else 0
                entries.append(_Entry(name, where, path, size, used,
                                      st.st_mtime))
        return sorted(entries, key=lambda e: e.mtime)

    def list(self) -> list[dict[str, Any]]:
        return [{'image_id': e.image_id, 'size_bytes': e.size,
                 'last_used': datetime.datetime.fromtimestamp(
                     e.mtime, datetime.timezone.utc).isoformat(),
                 'where': e.where}
                for e in sorted(self.entries(),
                                key=lambda e: (e.image_id, e.where))]

    def usage(self) -> dict[str, Any]:
        # Only base files take room here; RBD base records are not read.
        used = sum(e.used_bytes for e in self.entries(wheres=(FILE,)))
        try:
            vfs = os.statvfs(self.base_dir)
            free = vfs.f_bavail * vfs.f_frsize
        except FileNotFoundError:
            free = 0
        return {'path': self.base_dir, 'used_bytes': used,
                'free_bytes': free}

    def check_room(self, image_id: str, expanded: int) -> None:
        """Refuse a base file that would expand to ``expanded`` bytes
        (its virtual size, not what Glance stores: a small qcow2 can
        expand to fill a disk) above ``[image_cache] max_size_gb``, or
        above the room the cache's filesystem has left.

        :raises CacheFull: naming the image, its expanded size and the
            bound.
        """
        max_bytes = self.conf.image_cache.max_size_gb * units.Gi
        if max_bytes and expanded > max_bytes:
            raise exception.CacheFull(
                path=self.base_dir, image_id=image_id,
                reason=_('it expands to %(size)d bytes, above [image_cache] '
                         'max_size_gb (%(max)s GiB)') %
                {'size': expanded, 'max': self.conf.image_cache.max_size_gb})
        try:
            vfs = os.statvfs(self.base_dir)
        except OSError as e:
            raise file_sink.cache_error(self.base_dir, image_id, e)
        free = vfs.f_bavail * vfs.f_frsize
        if expanded > free:
            raise exception.CacheFull(
                path=self.base_dir, image_id=image_id,
                reason=_('it expands to %(size)d bytes, more than the '
                         '%(free)d bytes free') %
                {'size': expanded, 'free': free})

    def remove_unless_used(self, entry: _Entry) -> bool:
        """Remove ``entry`` unless a call uses its image now."""
        with self._users_lock:
            if self._users.get(entry.image_id):
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            return True
