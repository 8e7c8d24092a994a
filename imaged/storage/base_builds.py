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

"""A base image's build as its waiters see it: what the build leaves on the
base's lock object, and each waiting call's looks for the complete base
(:mod:`imaged.storage.bases` owns the protocol).

The builder writes the xattr ``imaged.build`` (id, host, start) when it
starts; a failed build writes its typed error in ``imaged.build_error``,
and the calls that waited for that build raise that error instead of
downloading again.
"""

import json
import time
from typing import Any, Callable
import uuid

from oslo_log import log as logging

from imaged import exception
from imaged.i18n import _
from imaged.storage import base_state

LOG = logging.getLogger(__name__)

BUILD_LOCK_NAME = 'imaged-build'
BUILD_XATTR = 'imaged.build'
BUILD_ERROR_XATTR = 'imaged.build_error'
# A build refused for the image itself answers the calls of the next
# seconds too (a boot storm's stragglers), instead of each downloading it.
REFUSALS = ('ImageUnacceptable',)
REFUSAL_TTL = 60
# Builds one call makes before it gives up (a cleanup may win a race with
# a new base, not three).
MAX_BUILDS = 3


def read_json(conn: Any, ioctx: Any, key: str, xattr: str) -> dict:
    """The JSON object in ``key``'s ``xattr``; {} if none (or not one)."""
    rados = conn.rados
    try:
        with conn.typed_errors(key):
            try:
                value = ioctx.get_xattr(key, xattr)
            except (rados.NoData, rados.ObjectNotFound):
                return {}
        found = json.loads(value)
    except (ValueError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


def record_start(conn: Any, ioctx: Any, key: str, host: str) -> str:
    """Name this host's new build on the lock object. :returns: its id."""
    build_id = uuid.uuid4().hex
    with conn.typed_errors(key):
        ioctx.set_xattr(key, BUILD_XATTR, json.dumps(
            {'id': build_id, 'host': host,
             'at': base_state.iso(time.time())}).encode())
    return build_id


def builder(conn: Any, ioctx: Any, key: str) -> str:
    """Who is building (for the log)."""
    return read_json(conn, ioctx, key, BUILD_XATTR).get(
        'host', 'another call')


def recent_refusal(conn: Any, ioctx: Any, key: str) -> bool:
    """Whether the last build failed, less than ``REFUSAL_TTL`` seconds
    ago, for the image itself (not Glance, Ceph or this host): a caller
    that comes just after gets the same answer, not another download.
    """
    record = read_json(conn, ioctx, key, BUILD_ERROR_XATTR)
    at = record.get('at')
    return record.get('class') in REFUSALS and \
        isinstance(at, (int, float)) and \
        0 <= time.time() - at < REFUSAL_TTL


def record_failure(conn: Any, ioctx: Any, key: str, build_id: str,
                   error: exception.ImagedException) -> None:
    if conn.seems_unreachable():
        return  # the waiters take over when the lease runs out
    record = {'build': build_id, 'class': type(error).__name__,
              'message': str(error), 'kwargs': error.kwargs,
              'at': time.time()}
    try:
        ioctx.set_xattr(key, BUILD_ERROR_XATTR,
                        json.dumps(record, default=str).encode())
    except conn.rados.Error as e:
        LOG.warning('Could not record the failed build of %s: %s; its '
                    'waiters build again', key, e)


def failed_build(conn: Any, ioctx: Any, key: str) -> str | None:
    """The id of the last build, if it failed; else None."""
    build_id = read_json(conn, ioctx, key, BUILD_XATTR).get('id')
    record = read_json(conn, ioctx, key, BUILD_ERROR_XATTR)
    if build_id is not None and record.get('build') == build_id:
        return build_id
    return None


def ever_refused(conn: Any, ioctx: Any, key: str) -> bool:
    """Whether the last build failed for the image itself (its bytes, its
    format), however long ago."""
    if failed_build(conn, ioctx, key) is None:
        return False
    cls = getattr(exception, str(read_json(
        conn, ioctx, key, BUILD_ERROR_XATTR).get('class')), None)
    return isinstance(cls, type) and \
        issubclass(cls, exception.ImageUnacceptable)


def raise_failure_of(conn: Any, ioctx: Any, key: str, build_id: str) -> None:
    """Raise the typed error that build ``build_id`` failed with."""
    record = read_json(conn, ioctx, key, BUILD_ERROR_XATTR)
    if record.get('build') != build_id:
        return
    cls = getattr(exception, str(record.get('class')), None)
    if not (isinstance(cls, type) and
            issubclass(cls, exception.ImagedException)):
        cls = exception.ImageDownloadFailed
    kwargs = record.get('kwargs')
    raise cls(record.get('message'),
              **(kwargs if isinstance(kwargs, dict) else {}))


class WaitForBase:
    """One call's looks for a complete base (``BaseImageStore.use``):
    each either finds it (and holds its lock shared), or builds it, or
    says how long to wait for another host's build.

    Bounded by the call's deadline (:class:`exception.Timeout`) and by
    ``MAX_BUILDS``; the typed error of a build it waited for is its own.
    """

    def __init__(self, store: Any, ioctx: Any, image_id: str,
                 build: Callable[[], Any], deadline: Any,
                 watching: Callable[[], Any]) -> None:
        self.store, self.ioctx, self.image_id = store, ioctx, image_id
        self.build, self.deadline, self.watching = build, deadline, watching
        self.key = base_state.lock_object(image_id)
        self.watch: Any = None
        self.before: str | None = None
        self.first_miss = True
        self.builds, self.made = 0, False
        self.pause = 0.0  # seconds to wait before the next look

    def remaining(self) -> float:
        opts = self.store.conn.conf.rbd
        if self.deadline is None:
            return opts.base_lock_timeout
        left = self.deadline.remaining()
        if left <= 0:
            raise exception.Timeout(what=self.store.what(self.image_id),
                                    seconds=0)
        return left

    def wait_for_builder(self, seconds: float) -> None:
        if seconds:
            self.watch.wait(seconds)

    def __call__(self) -> tuple[Any, Any, int] | None:
        """``(clone_lock, location, size)``, or None to look again."""
        store, ioctx, image_id, key = (self.store, self.ioctx,
                                       self.image_id, self.key)
        conn, opts = store.conn, store.conn.conf.rbd
        self.pause = 0.0
        self.remaining()  # past the call's deadline: Timeout
        clone_lock = store.lock_for(ioctx, image_id, shared=True)
        if not clone_lock.try_acquire():  # a removal or repair
            self.watch = self.watch or self.watching()
            clone_lock.acquire(min(opts.base_lock_timeout, self.remaining()),
                               store.what(image_id), wake=self.watch)
        try:
            base, size = store.complete(ioctx, image_id)
            if base is not None:
                store.record_use(image_id)
                return clone_lock, base, size
        except BaseException:
            clone_lock.release()
            raise
        clone_lock.release()
        if self.watch is None:
            self.watch = self.watching()
            return None  # a build may have ended before we watched
        if self.first_miss:
            # The failure of any build but one that had failed before this
            # call came is this call's too: it came while that build ran.
            # So is a recent failure that was the image's own fault.
            self.first_miss = False
            self.before = failed_build(conn, ioctx, key)
            if self.before is not None and \
                    recent_refusal(conn, ioctx, key):
                raise_failure_of(conn, ioctx, key, self.before)
        else:
            failed = failed_build(conn, ioctx, key)
            if failed is not None and failed != self.before:
                raise_failure_of(conn, ioctx, key, failed)
        if self.builds == MAX_BUILDS:
            raise exception.StorageError(
                name=base_state.base_name(image_id), pool=store.pool,
                reason=_('its base image was gone each time it was made'))
        build_lock = store.lock_for(ioctx, image_id, name=BUILD_LOCK_NAME)
        if build_lock.try_acquire():
            self.builds += 1
            try:
                self.made = store.build(ioctx, image_id,
                                        self.build) or self.made
            finally:
                build_lock.release()
            return None
        LOG.debug('Waiting for the base image of %s, built by %s',
                  image_id, builder(conn, ioctx, key))
        self.pause = min(self.remaining(), opts.base_lock_duration / 2.0)
        return None
