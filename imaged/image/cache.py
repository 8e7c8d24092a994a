"""The on-disk base image cache, keyed by image id.

A base file ``<base_dir>/<image_id>`` only ever appears by an atomic rename,
after its bytes matched Glance's hash, passed the format checks and were
converted to raw and fsynced. Everything in between lives in
``<base_dir>/.tmp`` and is removed at start-up, so no partial file can be
mistaken for an image.

One download per image: callers for the same image serialize on an external
(inter-process) lock and all but the first find the base file in place.
"""

import collections
import contextlib
import datetime
import errno
import hashlib
import os
import queue
import threading
import time
import uuid

from oslo_concurrency import lockutils
from oslo_log import log as logging
from oslo_utils import units

from imaged import exception
from imaged.i18n import _
from imaged.image import format as image_format
from imaged import malloc
from imaged.image import glance

LOG = logging.getLogger(__name__)

TMP_DIR = '.tmp'
CHUNK = units.Mi
_ZERO_CHUNK = bytes(CHUNK)

CachedImage = collections.namedtuple(
    'CachedImage', ['path', 'size_bytes', 'downloaded', 'tee'])


class _ShortRead(IOError):
    """Glance's answer ended before the image did: worth a retry."""


def _is_zero(chunk):
    if len(chunk) == len(_ZERO_CHUNK):
        return chunk == _ZERO_CHUNK
    return not chunk.strip(b'\0')


def _rechunk(pieces, size=CHUNK):
    """Join the small pieces an HTTP body arrives in into ~1 MiB chunks.

    Every chunk then costs one pass of Python code instead of sixteen.
    """
    buf, length = [], 0
    for piece in pieces:
        buf.append(piece)
        length += len(piece)
        if length >= size:
            yield b''.join(buf)
            buf, length = [], 0
    if buf:
        yield b''.join(buf)


def _is_raw(wrapper):
    """Whether the inspector already knows the stream is plain raw data."""
    try:
        detected = wrapper.format
    except Exception:  # ambiguous so far: keep inspecting
        return False
    return detected is not None and str(detected) == 'raw'


def _check_virtual_size(image_id, wrapper, written, max_virtual_size):
    """Stop a download as soon as it is known to be too large."""
    try:
        detected = wrapper.format
    except Exception:  # ambiguous so far; decided at the end
        return
    if detected is None:
        return
    # A raw image is as large as its bytes; others say so in their header.
    virtual_size = written if str(detected) == 'raw' else \
        detected.virtual_size
    if virtual_size > max_virtual_size:
        raise exception.ImageTooLarge(image_id=image_id,
                                      virtual_size=virtual_size,
                                      size_bytes=max_virtual_size)


class _HashThread:
    """Hashes chunks on another thread (hashlib releases the GIL).

    The hash is the slowest part of a download; this lets it run beside
    the network, file and Ceph work instead of after it.
    """

    def __init__(self, hasher):
        self.hasher = hasher
        self._queue = queue.Queue(maxsize=8)
        self._thread = None
        if hasher is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self):
        while (chunk := self._queue.get()) is not None:
            self.hasher.update(chunk)

    def update(self, chunk):
        if self._thread is not None:
            self._queue.put(chunk)

    def close(self):
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self):
        if self.hasher is None:
            return None
        self.close()
        return self.hasher.hexdigest()


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _abort_quietly(writer):
    """Abort a tee writer without hiding the error that made us abort."""
    try:
        writer.abort()
    except Exception:
        LOG.warning('Could not abort the streaming import; its partial '
                    'image is removed at the next start', exc_info=True)


def expected_hash(image):
    """``(hasher, hex digest, algorithm)`` Glance promises, or None."""
    algo, value = image.get('os_hash_algo'), image.get('os_hash_value')
    if algo and value and algo in hashlib.algorithms_available:
        return hashlib.new(algo), value, algo
    if image.get('checksum'):
        return hashlib.md5(usedforsecurity=False), image['checksum'], 'md5'
    return None


class ProgressLog:
    """Logs bytes done, percent and MB/s every few seconds."""

    def __init__(self, what, total, interval):
        self.what, self.total, self.interval = what, total, interval
        self.start = self._last = time.monotonic()

    def __call__(self, done):
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = done / units.Mi / max(now - self.start, 1e-6)
        if self.total:
            LOG.info('%s: %d of %d bytes (%.0f%%), %.1f MB/s', self.what,
                     done, self.total, 100.0 * done / self.total, rate)
        else:
            LOG.info('%s: %d bytes, %.1f MB/s', self.what, done, rate)


class ImageCache:
    """Downloads, checks, converts and keeps base images."""

    def __init__(self, conf, glance_api):
        self.conf = conf
        self.glance = glance_api
        self.base_dir = os.path.abspath(conf.image_cache.base_dir)
        self.tmp_dir = os.path.join(self.base_dir, TMP_DIR)
        self._download_slots = threading.BoundedSemaphore(
            conf.image_cache.max_concurrent_downloads)
        self._users = collections.Counter()
        self._users_lock = threading.Lock()

    # -- layout ---------------------------------------------------------------

    def base_image_path(self, image_id):
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

    def prepare(self):
        """Create the directories and drop what an earlier run left."""
        os.makedirs(self.tmp_dir, mode=0o750, exist_ok=True)
        leftovers = os.listdir(self.tmp_dir)
        for name in leftovers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.tmp_dir, name))
        if leftovers:
            LOG.info('Removed %d temporary files left in %s by an earlier '
                     'run', len(leftovers), self.tmp_dir)

    def _tmp_path(self, image_id, kind):
        return os.path.join(self.tmp_dir, '%s.%s.%s' % (
            image_id, kind, uuid.uuid4().hex[:8]))

    # -- use ------------------------------------------------------------------

    @contextlib.contextmanager
    def base_image(self, context, image, tee=None, max_virtual_size=None):
        """The checked raw base file of ``image``, downloading it if needed.

        While the block runs the file is in use and never evicted.

        :param tee: for raw images, ``tee(size)`` is called before each
            download attempt and must return a writer; every piece of the
            image holding data is also passed to its ``write(offset, data)``
            as it streams in (pieces of all zeros are not), and ``abort()``
            is called when the attempt fails. The writer of the successful
            download is returned as ``CachedImage.tee``; the caller then
            owns it. None when nothing was downloaded.
        :param max_virtual_size: a download whose virtual size turns out
            larger is stopped as soon as that is known (for qcow2, from its
            header), with ``ImageTooLarge``, and nothing is cached.
        """
        image_id = image['id']
        with self._users_lock:
            self._users[image_id] += 1
        try:
            yield self._fetch(context, image, tee, max_virtual_size)
        finally:
            with self._users_lock:
                self._users[image_id] -= 1
                if not self._users[image_id]:
                    del self._users[image_id]

    def touch(self, image_id):
        """Record a use of ``image_id``'s base file, if it is cached."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.base_image_path(image_id))

    def image_lock(self, name):
        """An inter-process lock in the cache's lock directory."""
        return lockutils.lock(name, lock_file_prefix='imaged-', external=True,
                              lock_path=self.conf.oslo_concurrency.lock_path)

    def _fetch(self, context, image, tee, max_virtual_size):
        image_id = image['id']
        path = self.base_image_path(image_id)
        with self.image_lock('image-%s' % image_id):
            try:
                os.utime(path)  # mtime records the last use
                return CachedImage(path, os.path.getsize(path), False, None)
            except FileNotFoundError:
                pass
            if image_format.QEMU_FORMATS.get(image['disk_format']) != 'raw':
                tee = None  # only raw bytes are the disk's bytes
            try:
                with self._download_slots:
                    tmp, writer = self._download(context, image, tee,
                                                 max_virtual_size)
            finally:
                malloc.release_free_memory()
            try:
                self._install(image, tmp, path)
            except BaseException:
                if writer is not None:
                    _abort_quietly(writer)
                raise
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return CachedImage(path, os.path.getsize(path), True, writer)

    def _install(self, image, downloaded, path):
        """Convert a checked download to raw if needed and rename it in."""
        image_id = image['id']
        if image_format.QEMU_FORMATS[image['disk_format']] == 'raw':
            final_tmp = downloaded
        else:
            final_tmp = self._tmp_path(image_id, 'raw')
            started = time.monotonic()
            try:
                image_format.convert_to_raw(image_id, downloaded, final_tmp,
                                            image['disk_format'], self.conf,
                                            cache_dir=self.base_dir)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(final_tmp)
                raise
            LOG.info('Converted image %s from %s to raw in %.1fs', image_id,
                     image['disk_format'], time.monotonic() - started)
        try:
            fd = os.open(final_tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(final_tmp, path)
            _fsync_dir(self.base_dir)
        except OSError as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(final_tmp)
            raise self._cache_error(image_id, e)

    # -- download -------------------------------------------------------------

    def _download(self, context, image, tee, max_virtual_size):
        """Download, hash and check ``image``.

        :returns: the temporary path and the ``tee`` writer, if any.
        """
        image_id = image['id']
        delays = glance.backoff_delays(self.conf.glance.num_retries)
        attempt = 0
        while True:
            tmp = self._tmp_path(image_id, 'download')
            writer = None
            try:
                if tee is not None and image.get('size'):
                    writer = tee(image['size'])
                self._download_once(context, image, tmp, writer,
                                    max_virtual_size)
                return tmp, writer
            except BaseException as e:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                if writer is not None:
                    _abort_quietly(writer)
                if isinstance(e, OSError) and e.errno in (errno.ENOSPC,
                                                          errno.EDQUOT):
                    raise self._cache_error(image_id, e)
                if not isinstance(e, glance.RETRIABLE + (_ShortRead,)):
                    raise
                if attempt >= len(delays):
                    raise exception.ImageDownloadFailed(
                        image_id=image_id,
                        reason=_('gave up after %(n)d attempts: %(err)s') %
                        {'n': attempt + 1, 'err': e})
                LOG.warning('Download of image %s failed (%s); starting it '
                            'again in %.0fs', image_id, e, delays[attempt])
                time.sleep(delays[attempt])
                attempt += 1

    def _download_once(self, context, image, tmp, writer, max_virtual_size):
        image_id = image['id']
        expected_size = image.get('size')
        promise = expected_hash(image)
        if promise is None:
            LOG.warning('Image %s has no hash in Glance; only its size is '
                        'verified', image_id)
        progress = ProgressLog('Download of image %s' % image_id,
                               expected_size,
                               self.conf.glance.progress_interval)
        started = time.monotonic()
        stream = _rechunk(self.glance.open_data(context, image_id))
        wrapper = image_format.inspect_stream(stream)
        chunks = iter(wrapper)
        hasher = _HashThread(promise[0] if promise else None)
        written = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            with os.fdopen(fd, 'wb') as f:
                for chunk in chunks:
                    hasher.update(chunk)
                    if _is_zero(chunk):
                        f.seek(len(chunk), os.SEEK_CUR)  # keep it sparse
                    else:
                        f.write(chunk)
                        if writer is not None:
                            writer.write(written, chunk)
                    written += len(chunk)
                    progress(written)
                    if max_virtual_size is not None:
                        _check_virtual_size(image_id, wrapper, written,
                                            max_virtual_size)
                    if chunks is not stream and _is_raw(wrapper):
                        # Raw has nothing more to inspect: stop paying.
                        chunks = stream
                f.truncate(written)
                f.flush()
                os.fsync(f.fileno())
            digest = hasher.hexdigest()
        finally:
            hasher.close()
            wrapper.close()
        if expected_size is not None and written < expected_size:
            raise _ShortRead('got %d of %d bytes' % (written, expected_size))
        if expected_size is not None and written > expected_size:
            raise exception.ImageUnacceptable(
                image_id=image_id,
                reason=_('Glance sent %(got)d bytes, more than its size of '
                         '%(size)d') % {'got': written, 'size': expected_size})
        if promise and digest != promise[1]:
            raise exception.ImageUnacceptable(
                image_id=image_id,
                reason=_("its data does not match Glance's %s hash") %
                promise[2])
        checked = image_format.check_image(image_id, wrapper,
                                           image['disk_format'], self.conf)
        if max_virtual_size is not None and \
                checked.virtual_size > max_virtual_size:
            raise exception.ImageTooLarge(image_id=image_id,
                                          virtual_size=checked.virtual_size,
                                          size_bytes=max_virtual_size)
        elapsed = time.monotonic() - started
        LOG.info('Downloaded image %s: %d bytes in %.1fs (%.1f MB/s)',
                 image_id, written, elapsed,
                 written / units.Mi / max(elapsed, 1e-6))

    def _cache_error(self, image_id, error):
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return exception.CacheFull(path=self.base_dir, image_id=image_id,
                                       reason=os.strerror(error.errno))
        return exception.ImageDownloadFailed(
            image_id=image_id, reason=_('cannot write %(path)s: %(err)s') %
            {'path': self.base_dir, 'err': error})

    # -- listing and cleanup ------------------------------------------------

    def _entries(self):
        """``(image_id, os.stat_result)`` of every base file."""
        try:
            names = os.listdir(self.base_dir)
        except FileNotFoundError:
            return []
        entries = []
        for name in names:
            try:
                if str(uuid.UUID(name)) != name:
                    continue
                entries.append((name, os.stat(os.path.join(self.base_dir,
                                                           name))))
            except (ValueError, FileNotFoundError):
                continue
        return entries

    def list(self):
        return [{'image_id': image_id,
                 'size_bytes': st.st_size,
                 'last_used': datetime.datetime.fromtimestamp(
                     st.st_mtime, datetime.timezone.utc).isoformat()}
                for image_id, st in sorted(self._entries())]

    def usage(self):
        used = sum(st.st_blocks * 512 for _id, st in self._entries())
        try:
            vfs = os.statvfs(self.base_dir)
            free = vfs.f_bavail * vfs.f_frsize
        except FileNotFoundError:
            free = 0
        return {'path': self.base_dir, 'used_bytes': used,
                'free_bytes': free}

    def _remove_unless_used(self, image_id):
        with self._users_lock:
            if self._users.get(image_id):
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.base_image_path(image_id))
            return True

    def clean(self, now=None):
        """Remove base files unused for too long, then evict LRU to fit.

        :returns: the image ids removed.
        """
        now = time.time() if now is None else now
        min_age = self.conf.image_cache.remove_unused_base_images_min_age
        max_bytes = self.conf.image_cache.max_size_gb * units.Gi
        removed = []
        entries = sorted(self._entries(), key=lambda e: e[1].st_mtime)
        kept = []
        for image_id, st in entries:
            if min_age and now - st.st_mtime >= min_age and \
                    self._remove_unless_used(image_id):
                LOG.info('Removed base image %s, unused for %ds', image_id,
                         now - st.st_mtime)
                removed.append(image_id)
            else:
                kept.append((image_id, st))
        if max_bytes:
            used = sum(st.st_blocks * 512 for _id, st in kept)
            for image_id, st in kept:
                if used <= max_bytes:
                    break
                if self._remove_unless_used(image_id):
                    LOG.info('Evicted base image %s to keep the cache under '
                             '%.1f GiB', image_id,
                             self.conf.image_cache.max_size_gb)
                    used -= st.st_blocks * 512
                    removed.append(image_id)
        return removed
