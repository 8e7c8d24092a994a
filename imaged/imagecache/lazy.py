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

"""The first disk of a new raw image before its base is copied
(``[image_cache] lazy_first_disk``; the evidence and the design:
doc/source/contributor/lazy-first-disk.rst).

A :class:`_LazyBuild` thread is the pool's one builder of the image's base
(``bases.detached_build``: calls of other hosts wait for the base as for
any download; calls of this host clone their disks from it too, until it
is closed for its publication). It:

1. starts the image's one download from Glance into a spool served by the
   agent's loopback source (the inspector, the hash and the signature see
   every byte, in order, as in any download);
2. once the first ``HEADER`` bytes have passed, runs the format inspector
   on them: anything but raw or a plain qcow2 (no backing or data file)
   is refused before librbd reads a byte;
3. makes the base an import-only migration target of that source under
   its partial name, snapshot protected, and hands it to the caller, who
   clones its disk from it (this host only);
4. copies it (``migration_execute``), and once the download has checked
   out (size, hash, signature) commits it and publishes the base;
5. on a refusal or a mismatch, quarantines it: never published, the typed
   error recorded for every waiter, a clone already made keeps reading the
   bytes it was served (committed so that it needs no source), a target
   without clones is aborted (snapshot first).
"""

import concurrent.futures
import struct
import threading
import time

from oslo_log import log as logging
from oslo_utils import units
import tenacity

from imaged import deadline as call_deadline
from imaged import exception
from imaged.i18n import _
from imaged.image import format as image_format
from imaged.image import lazy_source
from imaged.image import lazy_spool
from imaged.storage import base_state
from imaged.storage import lazy as rbd_lazy
from imaged.storage import locks

LOG = logging.getLogger(__name__)

# Bytes the inspector sees before the target is made (every inspector
# decides within the first MiB; an ISO's signature is at 32 KiB).
HEADER = 4 * units.Mi
BUSY = object()
# A failed execute is tried again after this pause (seconds); once the
# download has ended (every byte spooled), this many times at most.
EXECUTE_PAUSE = 1.0
_pause = time.sleep  # tests replace it
# Image ids remembered as having a complete base (then forgotten at once).
MAX_REMEMBERED = 10000
# Seconds the copy waits for the caller to clone its disk first.
HANDOVER_WAIT = 10.0
EXECUTES_AFTER_DOWNLOAD = 3
# Seconds between two tries of a recovery at start-up to take the build.
RECOVERY_PAUSE = 2.0
RECOVERY_MAX_SIZE = 1 << 60


# The formats a lazy base is made of: librbd's migration source format.
SOURCE_FORMATS = {'raw': 'raw', 'qcow2': 'qcow'}


def check_header(image_id, data, disk_format, conf, size, max_size):
    """Refuse an image whose first bytes are not those of a raw or plain
    qcow2 image (the inspector's safety checks: no backing file, no data
    file, no unknown feature), or whose disk is larger than ``max_size``.

    :param size: the image's size (a raw image's virtual size).
    :returns: ``(librbd's source format, the disk's size)``; the format
        None for a qcow2 image the download path takes but librbd's qcow
        reader could not read from these bytes.
    :raises ImageUnacceptable: naming the image and the reason.
    :raises ImageTooLarge: its virtual size is over ``max_size``.
    """
    inspector = image_format.StreamInspector()
    try:
        inspector.feed(data)
    finally:
        inspector.close()
    checked = image_format.check_image(image_id, inspector, disk_format,
                                       conf)
    found = str(checked.format)
    if found not in SOURCE_FORMATS:
        raise exception.ImageUnacceptable(
            image_id=image_id,
            reason=_('only raw and qcow2 images get a lazy first disk'))
    virtual_size = size if image_format.is_raw(found) else \
        checked.virtual_size
    if not image_format.is_raw(found) and not _qcow_readable(data):
        return None, virtual_size
    if not virtual_size:
        raise exception.ImageUnacceptable(
            image_id=image_id,
            reason=_('its first bytes do not say its virtual size'))
    if virtual_size > max_size:
        raise exception.ImageTooLarge(image_id=image_id,
                                      virtual_size=virtual_size,
                                      size_bytes=max_size)
    return SOURCE_FORMATS[found], virtual_size


def _qcow_readable(data):
    """Whether librbd's qcow reader can open a qcow2 image from its first
    bytes ``data`` alone: not encrypted, no internal snapshots, no
    incompatible feature (zstd compression, dirty, ...), its L1 table in
    ``data`` (librbd reads it at open: it must not wait for the rest)."""
    try:
        crypt, l1_size, l1_offset = struct.unpack_from('>IIQ', data, 32)
        snapshots, = struct.unpack_from('>I', data, 60)
        version, = struct.unpack_from('>I', data, 4)
        incompatible = struct.unpack_from('>Q', data, 72)[0] \
            if version >= 3 else 0
    except struct.error:
        return False
    return crypt == 0 and snapshots == 0 and incompatible == 0 and \
        l1_offset + 8 * l1_size <= len(data)


class LazyFirstDisks:
    """This host's lazy bases: the local source and their builds."""

    def __init__(self, conf, storage, fetcher, files, notifications=None):
        self.conf = conf
        self.notifications = notifications
        self.storage = storage
        self.fetcher = fetcher
        self.files = files
        opts = conf.image_cache
        self.source = lazy_source.LocalSource(opts.lazy_source_port,
                                              opts.lazy_source_timeout)
        self.source.published = self._published
        self._builds = {}  # image id -> its _LazyBuild, while it runs
        # image id -> its quarantined target kept for its clones.
        self._kept = {}
        # Images whose lazy bases a killed agent left: their clones may
        # read through the source whichever base the pool has now.
        self._left = set()
        self._complete = set()  # image ids whose base was found complete
        self._lock = threading.Lock()

    def eligible(self, image, max_size):
        """Raw images that fit, qcow2 ones (their virtual size is checked
        on their header); of a known size (the spool's)."""
        opts = self.conf.image_cache
        if not (opts.lazy_first_disk and opts.rbd_base_images):
            return False
        return bool(image.disk_format in SOURCE_FORMATS and image.size and
                    (image.disk_format == 'qcow2' or image.size <= max_size))

    def first_disk(self, context, image, max_size, timings, use):
        """``use(location, size)`` on a lazy base of ``image`` made now by
        this call, or None if this call makes none (not eligible, or a
        base exists or is being made: the caller takes the usual path).

        :raises: the typed error of the build (``ImageUnacceptable`` for a
            refused header, ...); ``Timeout`` past the call's deadline.
        """
        if not self.eligible(image, max_size) or image.id in self._complete:
            return None
        try:  # the spool is a local copy; the download path needs none
            self.files.check_room(image.id, image.size)
        except exception.CacheFull as e:
            LOG.info('Image %s gets no lazy first disk: %s', image.id, e)
            return None
        # Every later call of the image finds its base: one look, then
        # none (a base removed since is made again by a download).
        if self.storage.bases.location(image.id)[0] is not None:
            if len(self._complete) >= MAX_REMEMBERED:
                self._complete.clear()
            self._complete.add(image.id)
            return None
        self.source.start()
        with self._lock:
            # Another call of this host builds it: its target is shared.
            build = self._builds.get(image.id)
            first = build is None
            if first:
                build = self._builds[image.id] = _LazyBuild(
                    self, context, image, max_size)
        if first:
            build.start()
        wait = call_deadline.of(context).cap(self.conf.long_rpc_timeout)
        try:
            try:
                ready = build.ready.result(timeout=wait)
            except concurrent.futures.TimeoutError:
                raise exception.Timeout(
                    what=_('the lazy base of image %s') % image.id,
                    seconds=round(wait, 1))
            except exception.ImageTooLarge as e:
                if first or e.kwargs.get('size_bytes', max_size) >= max_size:
                    raise
                return None  # too large for another call's disk, not ours
            if ready is BUSY:
                return None
            location, size = ready
            if not build.share():  # published, or quarantined, since
                return None
            try:
                timings.step('lazy base')
                return use(location, size)
            finally:
                build.unshare()
        finally:  # the download and the copy go on
            if first:
                build.handed.set()

    def recover(self, context):
        """At start-up: finish the lazy bases a killed agent of this host
        left, each in the background as the image's next call would (the
        disks cloned from one read through this host's source: they wait
        for this), with ``context`` (imaged's own) for Glance.

        :returns: their image ids.
        """
        if self.conf.image_cache.lazy_first_disk:
            # Clones opened before a lazy base's commit (by a VM of a
            # killed agent's time) still read through the source.
            self.source.start()
        image_ids = rbd_lazy.LazyTarget.left_images(
            self.storage.conn, self.storage.partials, base_state.SUFFIX)
        self._left.update(image_ids)
        for image_id in image_ids:
            threading.Thread(target=self._recover, args=(context, image_id),
                             daemon=True,
                             name='lazy-recover-%s' % image_id[:8]).start()
        return image_ids

    def _recover(self, context, image_id):
        opts = self.conf

        def again(build):
            # Not built here: the killed agent's build lease still runs,
            # unless another host has made the base meanwhile.
            return build is not None and not build.building and \
                self.storage.bases.location(image_id)[0] is None

        def recovery(image):
            # Bounded by the target's own size (its header again).
            build = _LazyBuild(self, context, image, RECOVERY_MAX_SIZE,
                               recovery=True)
            with self._lock:
                if image_id in self._builds:
                    return None  # a call of this host finishes it
                self._builds[image_id] = build
            build.handed.set()  # no caller waits for a disk
            build.start()
            build.join(opts.glance.download_timeout + opts.long_rpc_timeout)
            return build
        try:
            image = self.fetcher.glance.show(context, image_id)
            self.source.start()
            build = tenacity.Retrying(
                retry=tenacity.retry_if_result(again),
                stop=tenacity.stop_after_delay(
                    2 * opts.rbd.base_lock_duration + 60),
                wait=tenacity.wait_fixed(RECOVERY_PAUSE), sleep=_pause,
                retry_error_callback=lambda state: state.outcome.result())(
                    recovery, image)
        except exception.ImagedException as e:
            LOG.error('Lazy base of image %s left by a killed agent: %s',
                      image_id, e)
            return
        if build is None or build.building:
            return
        if self.storage.bases.location(image_id)[0] is None:
            LOG.error('Lazy base of image %s left by a killed agent was not '
                      'finished here (another host builds its base): '
                      'the next call of the image finishes it', image_id)
            return
        self._supersede(image_id)

    def _supersede(self, image_id):
        """The lazy bases of ``image_id`` a killed agent left when another
        build has made its base meanwhile (a call that came while the dead
        agent's build lease ran): never published. One with clones is
        copied (through the source, which serves that base's bytes: the
        image's) and committed, so that they need no source, and kept for
        them (marked quarantined: the pool's cleanup removes it after its
        last clone); one without is aborted."""
        storage = self.storage
        for target in rbd_lazy.LazyTarget.left_behind(
                storage.conn, storage.partials,
                base_state.base_name(image_id), base_state.SNAPSHOT):
            try:
                if target.quarantined():
                    continue
                target.break_dead_locks()
                if target.abort():
                    LOG.info('Aborted lazy base %s/%s a killed agent left: '
                             'image %s has its base', target.pool,
                             target.part, image_id)
                    continue
                target.quarantine(_('never published: the base of image '
                                    '%s was made by another build') %
                                  image_id)
                target.execute()
                if target.state() is not None:
                    target.commit()
                LOG.warning('Lazy base %s/%s a killed agent left is kept for '
                            'its clones: image %s has its base', target.pool,
                            target.part, image_id)
            except exception.ImagedException as e:
                LOG.error('Lazy base %s/%s a killed agent left: %s',
                          target.pool, target.part, e)
            finally:
                target.done()

    def _published(self, image_id):
        """What the source serves for an image it no longer spools: the
        clones opened before their base's commit still read through it
        (its published lazy base; a quarantined target kept for its
        clones), or None."""
        conn = self.storage.conn
        found = rbd_lazy.PublishedBase.find(
            conn, base_state.base_name(image_id), image_id)
        kept = self._kept.get(image_id)
        if found is None and kept is not None:
            found = rbd_lazy.PublishedBase.find(
                conn, kept, image_id, mark=rbd_lazy.PREPARED_MARK)
        if found is None and image_id in self._left:
            # Made by another build meanwhile: the image's bytes too (no
            # librbd open in the source's threads).
            found = rbd_lazy.PublishedBase.find(
                conn, base_state.base_name(image_id), image_id, mark=None)
        return found

    def notify(self, image_id, pool, name, outcome, error=None):
        if self.notifications is not None:
            self.notifications.lazy_base(image_id, pool, name, outcome,
                                         error)

    def _ended(self, build):
        with self._lock:
            if self._builds.get(build.image.id) is build:
                del self._builds[build.image.id]

    def stop(self):
        self.source.stop()


class _LazyBuild(threading.Thread):
    """One lazy base, from the build lock to its publication."""

    def __init__(self, lazy, context, image, max_size, recovery=False):
        super().__init__(name='lazy-base-%s' % image.id[:8], daemon=True)
        self.lazy, self.context, self.image = lazy, context, image
        self.max_size = max_size
        self.recovery = recovery  # only finishes what a killed agent left
        self.ready = concurrent.futures.Future()  # (location, size) or BUSY
        self.downloaded = concurrent.futures.Future()
        self.target = None
        self.leftovers = []  # this host's, a killed agent's
        # The caller's clone is made (or none will be): the download and
        # the copy, which step aside until then, go on.
        self.handed = threading.Event()
        self.building = False  # this thread holds the pool's build
        self.size = image.size  # the disk's, once its header is read
        # [image_cache] lazy_plain_base: the plain base written from the
        # same download (a raw image's, on a new build), published at once.
        self.plain_wanted = False
        self.plain = None
        self.plain_published = False
        self.held = None  # the build's locks (the plain base records them)
        # The calls cloning their disks from the target now (at once), and
        # whether it is closed to new ones (before its publication,
        # quarantine or abort, which wait for those: no clone of a target
        # that goes).
        self.sharing = threading.Condition()
        self.cloning = 0
        self.closed = False

    def run(self):
        storage = self.lazy.storage
        try:
            with storage.bases.detached_build(self.image.id) as building:
                if not building:
                    self.ready.set_result(BUSY)
                    return
                self.building = True
                self._build()
        except BaseException as e:
            if not self.ready.done():
                self.ready.set_exception(e)
            LOG.error('Lazy base of image %s failed: %s', self.image.id, e)
        finally:
            self.close()
            self.handed.set()
            self._drop_plain()
            self.lazy.source.forget(self.image.id)
            for target in [self.target] + self.leftovers:
                if target is not None:
                    target.done()
            self.lazy._ended(self)

    def _download(self, plain):
        lazy, image = self.lazy, self.image
        makers = [lazy.source.spool_maker(
            image.id, lambda: lazy.files.scratch_path(image.id, 'lazy'))]
        if plain:
            makers.append(self._plain_sink)
        try:
            got = lazy.fetcher.stream(self.context, image, makers,
                                      self.max_size)
        except BaseException as e:
            if not _every_byte_served(lazy.source, image.id):
                lazy.source.fail(image.id, str(e))
            # else refused at the end (hash, signature, format): a clone
            # made already keeps reading what it was served.
            self.downloaded.set_exception(e)
        else:
            self.downloaded.set_result(got)

    def _plain_sink(self, size):
        """The plain base's partial (each attempt of the download its
        own), finished by the download but renamed by this build."""
        storage = self.lazy.storage
        final = storage.bases.final_image(self.image.id)
        self.plain = storage.partials.new(final._replace(metadata=None),
                                          size, held=self.held, rename=False)
        return self.plain

    def _drop_plain(self):
        """Remove a plain base finished but not published (the build
        failed after its download)."""
        plain = self.plain
        if plain is None or not plain.committed or self.plain_published:
            return
        storage = self.lazy.storage
        with storage.conn.ioctx(name=plain.part) as ioctx:
            storage.partials.remove_quietly(ioctx, plain.part)
        storage.partials.mark_in_progress(plain.part, False)

    def _build(self):
        lazy, image = self.lazy, self.image
        opts = lazy.conf
        started = time.monotonic()
        self.held = locks.held_exclusive()
        # The disks cloned from a lazy base a killed agent left read
        # through this host's source: it is finished first, and this
        # call waits for it as for any build.
        leftovers = rbd_lazy.LazyTarget.left_behind(
            lazy.storage.conn, lazy.storage.partials,
            base_state.base_name(image.id), base_state.SNAPSHOT)
        self.leftovers = leftovers
        if leftovers or self.recovery:
            self.ready.set_result(BUSY)
            self.handed.set()
        if self.recovery and all(left.quarantined() for left in leftovers):
            return  # finished, removed or kept: nothing to recover
        lazy.source.serve(image.id, image.size, lazy_spool.Hold(
            HEADER, self.handed, HANDOVER_WAIT))
        for leftover in leftovers:
            if leftover.publishable():  # killed before its publication
                self.target = leftover
                leftover.break_dead_locks()
                self._publish(started, _('copied and checked by a killed '
                                         'agent'), image.size)
                return
        if self.recovery and image.disk_format == 'raw':
            # Its open needs HEAD only: nothing to finish, no download.
            self._adopt(leftovers)
            if self.target is None:
                return
        self.plain_wanted = plain = opts.image_cache.lazy_plain_base and \
            image.disk_format == 'raw' and not self.recovery and \
            not leftovers
        threading.Thread(target=self._download, args=(plain,), daemon=True,
                         name='lazy-download-%s' % image.id[:8]).start()
        header = lazy.source.head(
            image.id, min(HEADER, image.size),
            time.monotonic() + opts.long_rpc_timeout)
        if header is None:
            if self.downloaded.done():
                self.downloaded.result()  # its error
            raise exception.ImageDownloadFailed(
                image_id=image.id,
                reason=_('its first bytes did not come in time'))
        headed = time.monotonic()
        source_format, size = check_header(
            image.id, header, image.disk_format, opts, image.size,
            self.max_size)
        if source_format is None:  # acceptable, but not to librbd
            LOG.info('Image %s gets no lazy first disk: librbd\'s qcow '
                     'reader cannot read it from its first bytes', image.id)
            if not self.ready.done():
                self.ready.set_result(BUSY)
            return
        self.size = size
        if self.downloaded.done():
            self.downloaded.result()  # refused already: no disk
        self._adopt(leftovers)
        if self.target is None and self.recovery:
            return  # aborted (no clones): no base is made without a call
        if self.target is not None:  # left by a killed agent: finish it
            LOG.info('Resuming lazy base %s/%s of image %s',
                     self.target.pool, self.target.part, image.id)
            self.target.break_dead_locks()
            self._finish(started)
            return
        self.target = target = rbd_lazy.LazyTarget(
            lazy.storage.conn, lazy.storage.partials,
            base_state.base_name(image.id), base_state.SNAPSHOT)
        try:
            target.prepare(lazy.source.url(image.id), size, source_format)
        except BaseException:
            self._abort()
            raise
        LOG.info('Lazy base %s/%s of image %s ready in %.2fs (first bytes '
                 '%.2fs, target %.2fs)', target.pool, target.part, image.id,
                 time.monotonic() - started, headed - started,
                 time.monotonic() - headed)
        if not self.ready.done():
            self.ready.set_result((target.location(), size))
            # The copy waits for the caller's clone (a few hundred ms):
            # both at once slowed the first disk 2-3x on 2 CPUs.
            self.handed.wait(HANDOVER_WAIT)
        self._finish(started)

    def _adopt(self, leftovers):
        for leftover in leftovers:
            if self.target is None and leftover.adopt():
                self.target = leftover

    def _execute(self, deadline):
        """Copy the whole image into the target: an execute stopped (the
        source answered 500 at its deadline, or the download failed) is
        resumed by another, until the deadline, or a few times once the
        download ended. :returns: None, or the error that stopped it."""
        lazy, image, target = self.lazy, self.image, self.target
        after_download = []  # executes failed since the download ended
        why = []

        def give_up(retry_state):
            error = retry_state.outcome.exception()
            if self.downloaded.done():
                after_download.append(error)
                if self.downloaded.exception() is not None and \
                        not _every_byte_served(lazy.source, image.id):
                    why.append(self.downloaded.exception())
                    return True
            if time.monotonic() > deadline or \
                    len(after_download) > EXECUTES_AFTER_DOWNLOAD:
                why.append(error)
                return True
            return False

        def resuming(retry_state):
            LOG.warning('Copy of lazy base %s stopped (%s); resuming',
                        target.part, retry_state.outcome.exception())
        try:
            tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(
                    exception.ImagedException),
                stop=give_up, wait=tenacity.wait_fixed(EXECUTE_PAUSE),
                before_sleep=resuming, sleep=_pause,
                reraise=True)(target.execute)
        except exception.ImagedException:
            return why[0]
        return None

    def _finish(self, started):
        lazy, image, target = self.lazy, self.image, self.target
        deadline = time.monotonic() + lazy.conf.glance.download_timeout
        if self.plain_wanted:
            # The plain base first, at the download's full speed (the
            # first disks read the spool meanwhile); then the copy, for
            # them alone.
            error = self._download_error(deadline)
            if error is None and self.plain is not None and \
                    self.plain.committed:
                self._publish_plain(started)
                self._set_aside(
                    _('never published: kept for the disks cloned from it '
                      '(the base of image %s was published from its '
                      'download)') % image.id, self._execute(deadline))
                return
            if error is None:  # no plain base after all: the lazy one
                error = self._execute(deadline)
        else:  # the copy is the publication
            error = self._execute(deadline)
            error = self._download_error(deadline) or error
        if error is not None:
            self._quarantine(error)
            raise error
        target.verified()
        self._publish(started, _('copied and checked'), self.size)

    def _download_error(self, deadline):
        """The download's outcome: None, or its (typed) error."""
        image = self.image
        try:
            got = self.downloaded.result(
                timeout=max(deadline - time.monotonic(), 1))
        except concurrent.futures.TimeoutError:
            return exception.ImageDownloadFailed(
                image_id=image.id, reason=_('it did not finish in time'))
        except exception.ImagedException as e:
            return e
        except Exception as e:  # not typed: still the download's failure
            return exception.ImageDownloadFailed(image_id=image.id,
                                                 reason=e)
        if got.size != image.size:
            return exception.ImageDataMismatch(
                image_id=image.id,
                reason=_('its size is %d bytes') % got.size)
        return None

    def _publish_plain(self, started):
        """The plain base the download wrote becomes the image's base
        (this thread holds the build)."""
        lazy, image, plain = self.lazy, self.image, self.plain
        storage = lazy.storage
        storage.bases.publish(plain.part, image.id)
        self.plain_published = True
        storage.partials.mark_in_progress(plain.part, False)
        lazy.files.record(image.id, image.size)
        lazy.notify(image.id, storage.conn.pool,
                    base_state.base_name(image.id), 'published')
        LOG.info('Base of image %s published in %.1fs from its download '
                 '(lazy_plain_base); its lazy base %s is kept for its '
                 'clones', image.id, time.monotonic() - started,
                 self.target.part)

    def share(self):
        """Whether a call may clone its disk from the target now (then it
        calls :meth:`unshare` once done)."""
        with self.sharing:
            if self.closed:
                return False
            self.cloning += 1
            return True

    def unshare(self):
        with self.sharing:
            self.cloning -= 1
            self.sharing.notify_all()

    def close(self):
        """No new clone of the target from now on; the clones being made
        end first (each bounded by its call's deadline)."""
        with self.sharing:
            self.closed = True
            while self.cloning:
                self.sharing.wait()

    def _publish(self, started, how, size):
        lazy, image, target = self.lazy, self.image, self.target
        self.close()
        if target.state() is not None:
            target.commit()
        lazy.storage.bases.publish(target.part, image.id)
        lazy.files.record(image.id, size)
        lazy.notify(image.id, target.pool, base_state.base_name(image.id),
                    'published')
        LOG.info('Lazy base of image %s published in %.1fs (%s)', image.id,
                 time.monotonic() - started, how)

    def _quarantine(self, error):
        """Never publish it; a target with clones stays for them (its
        copy finished if the source still has every byte), one without
        goes."""
        target, image = self.target, self.image
        LOG.error('Image %s: its lazy base %s/%s is quarantined: %s',
                  image.id, target.pool, target.part, error)
        self.lazy.notify(image.id, target.pool, target.part, 'quarantined',
                         error)
        self._set_aside(str(error))

    def _set_aside(self, reason, copy_error=None):
        """Mark the target never to be published (``reason``): kept for
        its clones, committed once every byte is copied (the pool's
        cleanup removes it after its last clone); one without clones goes.

        :param copy_error: what stopped the copy, if it did.
        """
        target, image = self.target, self.image
        self.close()
        if copy_error is not None:
            LOG.warning('Copy of lazy base %s/%s stopped: %s', target.pool,
                        target.part, copy_error)
        try:
            target.quarantine(reason)
            if self._abort():
                return
            if len(self.lazy._kept) >= MAX_REMEMBERED:
                self.lazy._kept.clear()
            self.lazy._kept[image.id] = target.part
            state = target.state()
            if state is None:
                return  # committed already
            if state == rbd_lazy.EXECUTED:
                target.commit()
            elif _every_byte_served(self.lazy.source, image.id):
                target.execute()
                target.commit()
            else:
                LOG.error('Lazy base %s/%s of image %s has a clone but not '
                          'all of its bytes: reads of the rest fail',
                          target.pool, target.part, image.id)
        except exception.ImagedException as e:
            LOG.error('Lazy base %s/%s set aside: %s', target.pool,
                      target.part, e)

    def _abort(self):
        """Abort a target without clones. :returns: whether it is gone."""
        self.close()
        if self.target is None:
            return True
        try:
            return self.target.abort()
        except exception.ImagedException as e:
            LOG.error('Could not abort lazy base %s/%s: %s',
                      self.target.pool, self.target.part, e)
            return False


def _every_byte_served(source, image_id):
    served = source.served(image_id)
    spool = served and served.spool
    return bool(spool and spool.complete)
