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

"""The spool of a lazy base: a download sink readers read as it is written.

The image's one sequential download from Glance (the format inspector, the
hash and the signature seeing every byte in order, as any download) is
written into a local file; the local source
(:mod:`imaged.image.lazy_source`) reads librbd's ranges out of it, each
once the download has passed it.
"""

import contextlib
import os
import threading
import time

from imaged import exception
from imaged.i18n import _


class SpoolFailed(Exception):
    """The spool will never hold the bytes asked for."""


class Hold:
    """Writes past ``offset`` wait until ``released`` is set, at most
    ``seconds``: the download steps aside while a first disk is handed out
    (both at once slowed the first disk, more the larger the image)."""

    def __init__(self, offset, released, seconds):
        self.offset, self.released, self.seconds = offset, released, seconds

    def wait(self):
        self.released.wait(self.seconds)


class Spool:
    """A download sink readers can read while it is written.

    The download writes pieces at increasing offsets (blocks of zeros are
    not written: the file is sparse) and tells :meth:`passed` how far the
    stream has gone; :meth:`read` waits until its range has passed.
    ``commit`` makes every byte readable; ``abort`` wakes the readers with
    :class:`SpoolFailed` and removes the file. The file stays after
    ``commit`` until :meth:`discard`.
    """

    def __init__(self, path, size, image_id, hold=None):
        self.path, self.size, self.image_id = path, size, image_id
        self._hold = hold
        self.passed_bytes = 0
        self.complete = False
        self.failed = None  # why, once aborted
        self._cond = threading.Condition()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            self.discard()
            raise

    # -- the download's side (a download.Sink) -----------------------------

    def write(self, offset, data):
        end = offset + len(data)
        if end > self.size:
            raise exception.ImageDataMismatch(
                image_id=self.image_id,
                reason=_('Glance sent more than its size of %d bytes') %
                self.size)
        hold = self._hold
        if hold is not None and offset >= hold.offset:
            self._hold = None  # every byte before offset has passed
            hold.wait()
        fd = self._fd
        if fd is None:
            raise exception.CacheError(path=self.path,
                                       image_id=self.image_id,
                                       reason=_('the spool was discarded'))
        try:
            os.pwrite(fd, data, offset)
        except OSError as e:  # ENOSPC above all
            raise exception.CacheError(path=self.path,
                                       image_id=self.image_id, reason=e)
        # Offsets only grow: every byte before this piece has passed.
        self._advance(end)

    def passed(self, end):
        """The stream has gone through its first ``end`` bytes."""
        self._advance(end)

    def _advance(self, end):
        with self._cond:
            if end > self.passed_bytes:
                self.passed_bytes = min(end, self.size)
                self._cond.notify_all()

    def commit(self, size):
        if size != self.size:
            self.abort(_('the download ended at %(got)d bytes of %(size)d')
                       % {'got': size, 'size': self.size})
            raise exception.ImageDataMismatch(
                image_id=self.image_id,
                reason=_('its size is %(got)d bytes, not %(size)d') %
                {'got': size, 'size': self.size})
        with self._cond:
            self.passed_bytes, self.complete = self.size, True
            self._cond.notify_all()

    def abort(self, reason=None):
        """The download failed: readers stop waiting; the file goes.

        Unless every byte had passed (the stream refused them at the end:
        its hash, its format): then the spool keeps serving them, to a VM
        that may be reading them already, until :meth:`discard`.
        """
        with self._cond:
            if self.complete:
                return
            if self.passed_bytes >= self.size and self._fd is not None:
                self.complete = True
                self._cond.notify_all()
                return
            self.failed = reason or _('the download failed')
            self._cond.notify_all()
        self.discard()

    # -- the readers' side ---------------------------------------------------

    def read(self, offset, length, deadline):
        """``length`` bytes at ``offset`` once they passed, waiting at most
        until ``deadline`` (``time.monotonic()``).

        :raises SpoolFailed: the download failed, or the bytes did not come
            in time.
        """
        end = min(offset + length, self.size)
        with self._cond:
            while self.passed_bytes < end and self.failed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SpoolFailed(
                        _('byte %(end)d of image %(id)s did not come in '
                          'time (%(passed)d passed)') %
                        {'end': end, 'id': self.image_id,
                         'passed': self.passed_bytes})
                self._cond.wait(left)
            if self.failed is not None:
                raise SpoolFailed(self.failed)
            fd = self._fd
        return os.pread(fd, end - offset, offset)

    def discard(self):
        """Close and remove the file (a reader left gets SpoolFailed)."""
        with self._cond:
            fd, self._fd = getattr(self, '_fd', None), None
            if self.failed is None and not self.complete:
                self.failed = _('the spool was discarded')
            self._cond.notify_all()
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
