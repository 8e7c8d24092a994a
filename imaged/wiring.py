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

"""The one place an agent's long-lived parts are made and handed to each
other: the Ceph connection's stores, the Glance client, the image cache,
the root-disk maker and its locks and flattens, snapshots, the long-call
gate, the leftovers' owner. Nothing else builds them; each part gets what
it uses, never reaches through another for it.
"""

from typing import Any

from imaged import background
from imaged import calls
from imaged import disk_access
from imaged import flattening
from imaged.image import glance
from imaged.image import locations as image_locations
from imaged.image import signature
from imaged.imagecache import files as base_files
from imaged.imagecache import manager as imagecache_manager
from imaged.imagecache import precache
from imaged import leftovers
from imaged import notifications as imaged_notifications
from imaged import policy
from imaged import rootdisk
from imaged import snapshot
from imaged.storage import rbd as rbd_storage


class Agent:
    """One agent's parts, as :func:`build` wired them."""

    def __init__(self, **parts: Any) -> None:
        self.__dict__.update(parts)


def build(conf: Any, host: str, glance_api: Any = None, storage: Any = None,
          files: Any = None, notifications: Any = None, signatures: Any = None,
          verify_signatures: bool = True) -> Agent:
    """The agent of ``host``; tests hand fakes for the parts that reach
    Glance, Ceph or the disk (and ``verify_signatures=False`` or their own
    ``signatures``)."""
    glance_api = glance_api or glance.GlanceAPI(conf)
    storage = storage or rbd_storage.RBDDriver(conf, host)
    notifications = notifications or imaged_notifications.Notifications(
        conf, host)
    if signatures is None and verify_signatures:
        signatures = signature.Signatures(conf, storage.verified,
                                          metrics=notifications.metrics)
    files = files or base_files.BaseFiles(conf)
    image_cache = imagecache_manager.ImageCacheManager(
        conf, glance_api, storage, files, notifications, signatures)
    locations = image_locations.CloneableLocations(conf, glance_api, storage)
    access = disk_access.DiskAccess(conf, storage)
    flattens_now = flattening.RootDiskFlattens(conf, storage, access)
    flattens = background.BackgroundFlattens(
        conf, flattens_now.flatten_in_background)
    root_disks = rootdisk.RootDisks(
        conf, glance_api, storage, image_cache, signatures, locations,
        access, flattens_now, flattens)
    pools = locations.pools
    return Agent(
        conf=conf, host=host, glance=glance_api, storage=storage,
        notifications=notifications, signatures=signatures, files=files,
        image_cache=image_cache, access=access, flattening=flattens_now,
        flattens=flattens, root_disks=root_disks,
        snapshots=snapshot.Snapshots(conf, glance_api, storage, access,
                                     pools, notifications, files),
        precache=precache.Precache(conf, root_disks, notifications),
        callers=policy.Callers(conf, glance_api),
        long_calls=calls.LongCalls(host, conf.max_concurrent_long_calls,
                                   conf.max_queued_long_calls),
        leftovers=leftovers.Leftovers(
            conf, storage, files,
            lambda: pools.allowed(storage.fsid()), image_cache.eviction))
