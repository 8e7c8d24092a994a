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

"""What a base image's build leaves on the base's lock object, for the calls
that waited for it (:mod:`imaged.storage.bases` owns the protocol).

The builder writes the xattr ``imaged.build`` (id, host, start) when it
starts; a failed build writes its typed error in ``imaged.build_error``,
and the calls that waited for that build raise that error instead of
downloading again.
"""

import json
import time
import uuid

from oslo_log import log as logging

from imaged import exception
from imaged.storage import base_state

LOG = logging.getLogger(__name__)

BUILD_XATTR = 'imaged.build'
BUILD_ERROR_XATTR = 'imaged.build_error'
# A build refused for the image itself answers the calls of the next
# seconds too (a boot storm's stragglers), instead of each downloading it.
REFUSALS = ('ImageUnacceptable',)
REFUSAL_TTL = 60


def read_json(conn, ioctx, key: str, xattr: str) -> dict:
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


def record_start(conn, ioctx, key: str, host: str) -> str:
    """Name this host's new build on the lock object. :returns: its id."""
    build_id = uuid.uuid4().hex
    with conn.typed_errors(key):
        ioctx.set_xattr(key, BUILD_XATTR, json.dumps(
            {'id': build_id, 'host': host,
             'at': base_state.iso(time.time())}).encode())
    return build_id


def builder(conn, ioctx, key: str) -> str:
    """Who is building (for the log)."""
    return read_json(conn, ioctx, key, BUILD_XATTR).get(
        'host', 'another call')


def recent_refusal(conn, ioctx, key: str) -> bool:
    """Whether the last build failed, less than ``REFUSAL_TTL`` seconds
    ago, for the image itself (not Glance, Ceph or this host): a caller
    that comes just after gets the same answer, not another download.
    """
    record = read_json(conn, ioctx, key, BUILD_ERROR_XATTR)
    at = record.get('at')
    return record.get('class') in REFUSALS and \
        isinstance(at, (int, float)) and \
        0 <= time.time() - at < REFUSAL_TTL


def record_failure(conn, ioctx, key: str, build_id: str,
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


def failed_build(conn, ioctx, key: str) -> str | None:
    """The id of the last build, if it failed; else None."""
    build_id = read_json(conn, ioctx, key, BUILD_XATTR).get('id')
    record = read_json(conn, ioctx, key, BUILD_ERROR_XATTR)
    if build_id is not None and record.get('build') == build_id:
        return build_id
    return None


def raise_failure_of(conn, ioctx, key: str, build_id: str) -> None:
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
