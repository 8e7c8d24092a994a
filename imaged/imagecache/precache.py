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

"""``cache_images``: prepare images before any root disk asks for them.

Each image is prepared exactly as the first ``create_root_disk`` from it
would (``RootDisks.cache_image``), a few at a time, and answered with nova's
words: ``cached`` (fetched now), ``existing`` (already there, or cloneable
from Glance's own store), ``error`` (the fetch failed; the log and the
notification say why) and ``unsupported`` (an image imaged refuses).
"""

from concurrent import futures
from typing import Any

from oslo_log import log as logging

from imaged import exception

LOG = logging.getLogger(__name__)

CACHED = 'cached'
EXISTING = 'existing'
ERROR = 'error'
UNSUPPORTED = 'unsupported'
STATUSES = (CACHED, EXISTING, ERROR, UNSUPPORTED)

# Images imaged will not take whatever happens: not worth a retry.
REFUSALS = (exception.ImageUnacceptable, exception.ImageTooLarge)


class Precache:
    """Runs ``cache_images`` for one agent."""

    def __init__(self, conf: Any, root_disks: Any,
                 notifications: Any) -> None:
        self.conf = conf
        self.root_disks = root_disks
        self.notifications = notifications

    def _cache_one(self, context, image_id):
        try:
            status = self.root_disks.cache_image(context, image_id)
        except REFUSALS as e:
            LOG.warning('Image %s cannot be cached: %s', image_id, e)
            return UNSUPPORTED
        except exception.ImagedException as e:
            LOG.warning('Caching image %s failed: %s', image_id, e)
            return ERROR
        except Exception:
            # One image's bug must not lose the answer for the others.
            LOG.exception('Caching image %s failed unexpectedly', image_id)
            return ERROR
        if status not in (CACHED, EXISTING):
            LOG.error('Caching image %s answered %r, not cached or '
                      'existing', image_id, status)
            return ERROR
        return status

    def run(self, context: Any, image_ids: list[str]) -> dict[str, str]:
        """``{image_id: status}`` for validated, distinct ``image_ids``."""
        total = len(image_ids)
        results: dict[str, str] = {}
        cached: list[str] = []
        failed: list[str] = []
        self.notifications.cache_images_start(context, total)
        workers = min(self.conf.image_cache.precache_concurrency, total)
        with futures.ThreadPoolExecutor(
                max_workers=workers,
                thread_name_prefix='precache') as pool:
            jobs = {pool.submit(self._cache_one, context, image_id): image_id
                    for image_id in image_ids}
            for job in futures.as_completed(jobs):
                image_id = jobs[job]
                status = job.result()
                results[image_id] = status
                (cached if status in (CACHED, EXISTING)
                 else failed).append(image_id)
                self.notifications.cache_images_progress(
                    context, len(results), total, image_id, status, cached,
                    failed)
        self.notifications.cache_images_end(context, total, cached, failed)
        LOG.info('cache_images: %d of %d images ready, %d failed',
                 len(cached), total, len(failed))
        # The caller's order, whatever order they finished in.
        return {image_id: results[image_id] for image_id in image_ids}
