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

"""Which location of an image can be cloned: the one place that decides.

Only a raw image can be a copy-on-write clone. Its candidate locations come,
first that answers:

1. the image record: ``locations`` (Glance's ``show_multiple_locations``),
   else ``direct_url`` (``show_image_direct_url``), both off in a securely
   configured Glance;
2. Glance's service-only locations API, asked as imaged's own user;
3. with ``[glance] rbd_store_name`` set and no location cloneable: a copy of
   the image into that store (``copy-image``), then its locations again.

A candidate is cloneable when it is an ``rbd://`` URL of our cluster, in a
pool of one of Glance's RBD stores (:class:`GlancePools`), names the image
asked for (``<pool>/<image id>@snap``: how Glance's RBD store keeps an image,
and how imaged names the copies it registers), and its snapshot opens
read-only. A location anywhere else in our cluster (imaged's own pool:
another instance's disk), or naming another image in Glance's pool (an
image owner who set a location: OSSN-0065), makes the whole image
unacceptable, before anything is opened: cloning it would hand one tenant
another's data. Only "not an
rbd:// URL", "another cluster" and Ceph's "not found" mean "not cloneable";
a Ceph that does not answer the probe is a typed error, never a reason to
download an image Glance keeps in our cluster.

A location found cloneable is remembered for ``[glance]
cloneable_location_ttl`` seconds with its snapshot's size (a snapshot does
not change), so that the next disks of an image cost no locations request
and no probe; the record is still read with each caller's token first, and
a clone that finds the snapshot gone has the location looked up again.

Every step taken lands in the call's timings; a location is logged only
through :func:`imaged.redact.location`.
"""

import collections
import threading
import time
from typing import Any

import cachetools
from oslo_concurrency import lockutils
from oslo_log import log as logging

from imaged import deadline as call_deadline
from imaged import exception
from imaged.i18n import _
from imaged.image import store_copy
from imaged import redact
from imaged.storage import location as rbd_location
from imaged.storage import snapshots as rbd_snapshots

LOG = logging.getLogger(__name__)

NOT_CLONEABLE = (None, None)

# Images whose "cannot clone" reason was logged at info already.
_LOGGED_IMAGES = 4096

# How long Glance's description of its stores is trusted.
STORES_TTL = 300.0

# How many images' cloneable locations are remembered at most.
_REMEMBERED_IMAGES = 4096
# Seconds a call waits for another call's lookup of the same image when
# [glance] timeout (the session's) is not set.
LOOKUP_WAIT = 60


def _urls(locations):
    return [loc.get('url') for loc in locations or []
            if isinstance(loc, dict) and loc.get('url')]


def _parsed(urls):
    parsed = []
    for url in urls:
        try:
            parsed.append(rbd_location.parse_rbd_location(url))
        except rbd_location.NotAnRBDLocation:
            pass
    return parsed


class GlancePools:
    """The pools imaged may clone from: those of Glance's RBD stores in our
    cluster, never ``[rbd] pool``.

    Glance's ``GET /v2/info/stores/detail`` names them (asked at most every
    ``STORES_TTL`` seconds); a Glance that does not describe its stores
    leaves ``[glance] rbd_store_pools``. A store that shows no fsid (an
    older glance_store) may be in any cluster: its pool counts only if
    ``[glance] rbd_store_pools`` names it too.
    """

    def __init__(self, conf: Any, glance_api: Any,
                 clock: Any = time.monotonic) -> None:
        self.conf = conf
        self.glance = glance_api
        self._clock = clock
        self._lock = threading.Lock()
        self._stores = None
        self._read_at = None

    def _glance_stores(self):
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at > STORES_TTL:
                self._stores = self.glance.rbd_stores()
                self._read_at = now
            return self._stores

    def allowed(self, fsid: str) -> set[str]:
        """The set of pool names in cluster ``fsid`` Glance keeps images in.
        """
        stores = self._glance_stores()
        if stores is None:
            pools = set(self.conf.glance.rbd_store_pools)
        else:
            # A store that shows no fsid could be another cluster's, where
            # a pool of the same name in ours is not Glance's.
            listed = set(self.conf.glance.rbd_store_pools)
            pools = {s['pool'] for s in stores
                     if s['fsid'] == fsid or
                     (s['fsid'] is None and s['pool'] in listed)}
        pools.discard(self.conf.rbd.pool)
        return pools


class CloneableLocations:
    """Finds a cloneable location of an image, asking Glance as needed."""

    def __init__(self, conf: Any, glance_api: Any, storage: Any,
                 copier: Any = None, pools: GlancePools | None = None,
                 clock: Any = time.monotonic) -> None:
        self.conf = conf
        self.glance = glance_api
        self.storage = storage
        self.copier = copier or store_copy.StoreCopier(conf, glance_api)
        self.pools = pools or GlancePools(conf, glance_api)
        self._logged: collections.OrderedDict[str, Any] = \
            collections.OrderedDict()
        self._logged_lock = threading.Lock()
        ttl = conf.glance.cloneable_location_ttl
        self._found: Any = cachetools.TTLCache(_REMEMBERED_IMAGES, ttl,
                                               timer=clock) if ttl else None
        self._found_lock = threading.Lock()
        # One lookup per image at a time in this process: a storm's callers
        # of one image wait for the first one's answer instead of asking
        # Glance's locations API once each (96 calls on 6 hosts asked it
        # 96 times, p50 2 s each, at 3cab0be).
        self._lookups = lockutils.Semaphores()

    def cloneable(self, context: Any, image: Any,
                  timings: Any) -> tuple[Any, int | None]:
        """``(location, parent_size)`` to clone, or ``(None, None)``.

        :param image: the record, as read with the caller's context (which
            proves the caller may read the image).
        :param timings: has ``step(name)``; gets one step per Glance call.
        """
        image_id = image.id
        if image.disk_format != 'raw':
            LOG.debug('Image %s is %s, not raw: not cloneable', image_id,
                      image.disk_format)
            self._ours(image_id, image.shown_urls())  # refuses foreign pools
            return NOT_CLONEABLE
        found = self._remembered(image)
        if found is not None:
            return found
        lookup = self._lookups.get(image_id)
        # Bounded like the lookup itself; past that, this call asks alone.
        waited = lookup.acquire(timeout=call_deadline.of(context).cap(
            getattr(self.conf.glance, 'timeout', None) or LOOKUP_WAIT))
        try:
            found = self._remembered(image) if waited else None
            if found is None:
                found = self._find(context, image, timings)
                if found is not NOT_CLONEABLE:
                    self._remember(image_id, found)
        finally:
            if waited:
                lookup.release()
        return found

    def _remembered(self, image):
        if self._found is None:
            return None
        with self._found_lock:
            found = self._found.get(image.id)
        if found is None:
            return None
        loc = found[0]
        if image.location_urls and loc not in _parsed(image.location_urls):
            return None  # the record shows where the image is: elsewhere
        if loc.pool not in self.pools.allowed(loc.fsid):
            return None  # not one of Glance's pools any more
        return found

    def _remember(self, image_id, found):
        if self._found is not None:
            with self._found_lock:
                self._found[image_id] = found

    def forget(self, image_id: str) -> None:
        """Look image ``image_id``'s location up again next time."""
        if self._found is not None:
            with self._found_lock:
                self._found.pop(image_id, None)

    def _find(self, context, image, timings):
        image_id = image.id
        shown = image.shown_urls()
        found = self._probe(image_id, shown)
        if found is not None:
            return found
        if image.location_urls:
            # Glance shows every location in the record: none is ours.
            read_again = self._record_reader(context, image_id)
        else:
            urls, why = self.glance.image_locations(context, image_id)
            timings.step('locations api')
            if urls is None:
                # Blind, a copy could not be found either: download.
                self._log_once(image_id, 'Glance shows imaged no location '
                               'of image %s, so it is downloaded, not '
                               'cloned: %s', image_id, why)
                return NOT_CLONEABLE
            found = self._probe(image_id, _urls(urls))
            if found is not None:
                return found
            read_again = self._api_reader(context, image_id)
        return self._copy_and_probe(context, image, read_again, timings)

    def _record_reader(self, context, image_id):
        def read():
            return self.glance.show(context, image_id).shown_urls()
        return read

    def _api_reader(self, context, image_id):
        def read():
            return _urls(self.glance.image_locations(context, image_id)[0])
        return read

    def _copy_and_probe(self, context, image, read_again, timings):
        image_id = image.id
        store = self.conf.glance.rbd_store_name
        if not store:
            return NOT_CLONEABLE
        if store_copy.store_state(image, store) == 'present':
            self._log_once(image_id, 'Image %s is in store %s but no '
                           'location of it is cloneable here: is '
                           '[glance] rbd_store_name the store in this '
                           'cluster?', image_id, store)
            return NOT_CLONEABLE
        result = self.copier.copy(context, image_id, store)
        if result.outcome != store_copy.COPIED:
            timings.step('copy-image %s' % result.outcome)
            LOG.warning('Copy of image %s into store %s %s (%s): '
                        'downloading it instead', image_id, store,
                        result.outcome, result.reason)
            return NOT_CLONEABLE
        timings.step('copy-image')
        found = self._probe(image_id, read_again())
        if found is None:
            LOG.warning('Image %s was copied into store %s but no location '
                        'of it is cloneable here: is [glance] rbd_store_name '
                        'the store in this cluster?', image_id, store)
            return NOT_CLONEABLE
        return found

    def _probe(self, image_id, urls):
        """The first cloneable ``(location, size)`` among ``urls``, or None.

        :raises ImageUnacceptable: a URL points into our cluster outside
            Glance's pools (checked for every URL before any is opened).
        """
        ours = self._ours(image_id, urls)
        for loc in ours:
            size = self.storage.snapshot_size(loc)
            if size is not None:
                return loc, size
            LOG.debug('Location %s of image %s is not cloneable: no such '
                      'image or snapshot', redact.location(
                          rbd_location.format_rbd_location(*loc)), image_id)
        return None

    def _ours(self, image_id, urls):
        """The ``urls`` in our cluster, parsed, once all are known to be in
        Glance's pools.
        """
        ours = []
        for url in urls:
            try:
                loc = rbd_location.parse_rbd_location(url)
            except rbd_location.NotAnRBDLocation as e:
                LOG.debug('Location %s of image %s is not cloneable: %s',
                          redact.location(url), image_id, e)
                continue
            if not self.storage.in_cluster(loc):
                LOG.debug('Location %s of image %s is not cloneable: in '
                          'another Ceph cluster', redact.location(url),
                          image_id)
                continue
            ours.append(loc)
        if not ours:
            return ours
        allowed = self.pools.allowed(ours[0].fsid)
        for loc in ours:
            if loc.pool in allowed and (loc.image, loc.snapshot) != (
                    image_id, rbd_snapshots.SNAPSHOT):
                LOG.warning('Image %s has a location in Glance\'s pool %s '
                            'that names another image (%s@%s): refused',
                            image_id, loc.pool, loc.image, loc.snapshot)
                raise exception.ImageUnacceptable(
                    image_id=image_id,
                    reason=_('its location names %(image)s@%(snap)s in '
                             'Ceph pool %(pool)s, not this image\'s '
                             'snapshot') %
                    {'image': loc.image, 'snap': loc.snapshot,
                     'pool': loc.pool})
            if loc.pool not in allowed:
                LOG.warning('Image %s has a location in pool %s of our Ceph '
                            'cluster, which is not a pool of Glance\'s '
                            '(%s): refused', image_id, loc.pool,
                            ', '.join(sorted(allowed)) or 'none')
                raise exception.ImageUnacceptable(
                    image_id=image_id,
                    reason=_('its location is in Ceph pool %(pool)s, which '
                             'is not one of Glance\'s stores') %
                    {'pool': loc.pool})
        return ours

    def _log_once(self, image_id, msg, *args):
        """Log at info the first time for an image, at debug after."""
        with self._logged_lock:
            first = image_id not in self._logged
            self._logged[image_id] = True
            while len(self._logged) > _LOGGED_IMAGES:
                self._logged.popitem(last=False)
        (LOG.info if first else LOG.debug)(msg, *args)
