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

"""Glance: the images the benchmark uploads, downloads and counts."""

import contextlib
import os
import re
import time

import requests

from tools.bench.progress import describe
from tools.bench.progress import log


class GlanceImages:
    """Images the benchmark uploads; every one is deleted at the end."""

    def __init__(self, stack, run_id):
        from tests.functional import base
        self.url = stack['GLANCE_URL']
        self.access_log = stack['GLANCE_ACCESS_LOG']
        # As the stack's demo user (the images are the demo project's).
        self.client = base.glance_client()
        self.run_id = run_id
        self.ids = set()       # not deleted yet
        self.created = set()   # ever

    def create(self, data, disk_format='raw', backend='local', attempts=3):
        """Upload ``data()`` (a stream with ``size``) as a new image.

        Glance on SQLite answers 500 ("database is locked") while others
        use it: that is the stack, not a sample, so it is retried here.
        """
        for attempt in range(1, attempts + 1):
            image_id = None
            try:
                image_id = self.client.images.create(
                    name='imaged-bench-%s' % self.run_id,
                    disk_format=disk_format, container_format='bare')['id']
                self.ids.add(image_id)
                self.created.add(image_id)
                with contextlib.closing(data()) as stream:
                    self.client.images.upload(image_id, stream,
                                              image_size=stream.size,
                                              backend=backend)
                image = dict(self.client.images.get(image_id))
                if image['status'] == 'active':
                    return image
                error = RuntimeError('image %s is %s after its upload' %
                                     (image_id, image['status']))
            except Exception as e:
                error = e
            if image_id is not None:
                with contextlib.suppress(Exception):
                    self.delete(image_id)
            if attempt < attempts:
                log('Glance upload failed (%s); again', describe(error))
                time.sleep(3 * attempt)
        raise error

    def delete(self, image_id, attempts=3):
        for attempt in range(1, attempts + 1):
            try:
                self.client.images.delete(image_id)
                break
            except Exception as e:
                if 'not found' in str(e).lower() or '404' in str(e):
                    break
                if attempt == attempts:
                    raise
                time.sleep(3 * attempt)
        self.ids.discard(image_id)

    def download(self, image_id, path):
        """The naive download: glanceclient into a file (holes for zeros,
        which keeps the file small and the baseline no slower)."""
        with open(path, 'wb') as f:
            for chunk in self.client.images.data(image_id):
                if chunk.count(0) == len(chunk):
                    f.seek(len(chunk), os.SEEK_CUR)
                else:
                    f.write(chunk)
            f.truncate()

    def read_all(self, image_id, block=4 << 20):
        """Glance alone: the image's bytes read into one reused buffer and
        dropped, unverified. :returns: the number of bytes read."""
        url = '%s/v2/images/%s/file' % (self.url, image_id)
        buf, total = bytearray(block), 0
        with requests.get(url, headers=self.auth_headers(), stream=True,
                          timeout=60) as resp:
            resp.raise_for_status()
            while n := resp.raw.readinto(buf):
                total += n
        return total

    def auth_headers(self):
        """The token glanceclient sends, for requests made beside it."""
        http = self.client.http_client
        session = getattr(http, 'session', None)
        if hasattr(session, 'get_auth_headers'):  # a keystoneauth session
            return session.get_auth_headers() or {}
        token = getattr(http, 'auth_token', None)
        return {'X-Auth-Token': token} if token else {}

    def downloads(self, image_id):
        """``GET .../file`` lines for the image in Glance's access log."""
        pattern = re.compile(r'GET /v2/images/%s/file' % image_id)
        with open(self.access_log, errors='replace') as f:
            return sum(1 for line in f if pattern.search(line))

    def problems(self):
        try:
            status = requests.get(self.url + '/versions', timeout=10) \
                .status_code
        except requests.RequestException as e:
            return ['Glance: %s' % describe(e)]
        return ['Glance answers %d' % status] if status >= 500 else []
