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

"""The scenario tests' own access to Ceph (to check what they created) and
to Glance (as the test class's user, through Tempest's images client)."""

import contextlib
import re
import uuid

from oslo_context import context as oslo_context
from tempest import config
from tempest.lib import exceptions as lib_exc
import tenacity
import urllib3

CONF = config.CONF

# What a busy Glance (e.g. on SQLite) answers now and then; the tests are
# not about Glance, so they try again.
GLANCE_FLAKES = (lib_exc.ServerFault,  # 500
                 lib_exc.UnexpectedResponseCode,  # 502, 503, 504
                 urllib3.exceptions.HTTPError)  # a dropped connection
GLANCE_ATTEMPTS = 5


def glance_retrying(wait=True):
    """Up to ``GLANCE_ATTEMPTS`` tries while Glance flakes (0.5 s, 1 s,
    2 s... apart, or at once); then its error."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(GLANCE_FLAKES),
        stop=tenacity.stop_after_attempt(GLANCE_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=0.5) if wait
        else tenacity.wait_none(),
        reraise=True)


def glance_call(func, *args, **kwargs):
    return glance_retrying()(func, *args, **kwargs)


class Ceph:
    """Read-mostly access to the agent's cluster, to check disks."""

    def __init__(self, options):
        import rados
        import rbd
        self.rados, self.rbd = rados, rbd
        # A stuck PG must fail a test's Ceph call, never hang the suite.
        extra = {'client_mount_timeout': '30', 'rados_osd_op_timeout': '120'}
        if options.keyring:
            extra['keyring'] = options.keyring
        self.cluster = rados.Rados(rados_id=options.user,
                                   conffile=options.ceph_conf, conf=extra)
        self.cluster.connect(timeout=30)
        self.pool = options.pool

    def fsid(self):
        return self.cluster.get_fsid()

    @contextlib.contextmanager
    def _image(self, name, pool=None, snapshot=None):
        with self.cluster.open_ioctx(pool or self.pool) as ioctx:
            with self.rbd.Image(ioctx, name, snapshot=snapshot,
                                read_only=True) as image:
                yield image

    def names(self, pool=None):
        with self.cluster.open_ioctx(pool or self.pool) as ioctx:
            return self.rbd.RBD().list(ioctx)

    def names_with(self, *words):
        """Names in the pool that contain any of ``words``."""
        return sorted(n for n in self.names() if any(w in n for w in words))

    def size(self, name, pool=None, snapshot=None):
        with self._image(name, pool, snapshot) as image:
            return image.size()

    def read(self, name, offset, length, pool=None, snapshot=None):
        with self._image(name, pool, snapshot) as image:
            return image.read(offset, length)

    def parent(self, name):
        """``(pool, image, snapshot)`` the disk is a clone of, or None."""
        with self._image(name) as image:
            try:
                return tuple(image.parent_info())
            except self.rbd.ImageNotFound:
                return None

    def contains(self, name, needle, chunk=16 * 1024 * 1024):
        """Whether ``needle`` occurs anywhere in the disk's bytes."""
        with self._image(name) as image:
            size, offset, tail = image.size(), 0, b''
            while offset < size:
                data = tail + image.read(offset, min(chunk, size - offset))
                if needle in data:
                    return True
                tail = data[-len(needle):]
                offset += chunk
        return False

    def remove(self, name):
        """Remove an image and its snapshots; False if it cannot go yet."""
        with self.cluster.open_ioctx(self.pool) as ioctx:
            try:
                with self.rbd.Image(ioctx, name) as image:
                    for snap in list(image.list_snaps()):
                        if image.is_protected_snap(snap['name']):
                            image.unprotect_snap(snap['name'])
                        image.remove_snap(snap['name'])
                self.rbd.RBD().remove(ioctx, name)
            except self.rbd.ImageNotFound:
                pass
            except self.rbd.Error:  # busy, or clones of it still exist
                return False
        return True

    def close(self):
        self.cluster.shutdown()


class Glance:
    """The Image service as the test class's user sees it."""

    def __init__(self, images_client):
        self.client = images_client
        self.auth_provider = images_client.auth_provider
        # The catalog's URL, without the API version Tempest adds to it.
        self.endpoint = self.auth_provider.base_url(
            {k: v for k, v in images_client.filters.items()
             if k != 'api_version'}).rstrip('/')

    def request_context(self):
        """What a caller passes over RPC: its token and the project it
        claims (the agent believes Keystone, and refuses a claim that is not
        the token's)."""
        return request_context(self.auth_provider)

    def store(self, kind):
        name = {'clone': CONF.imaged.clone_store,
                'download': CONF.imaged.download_store}[kind]
        return name or None

    def upload(self, image_id, data, store=None):
        """PUT the image's data, into ``store`` if one is named."""
        headers = {'Content-Type': 'application/octet-stream'}
        if store:
            headers['X-Image-Meta-Store'] = store
        resp, _body = self.client.request(
            'PUT', 'images/%s/file' % image_id, headers=headers, body=data)
        self.client.expected_success(204, resp.status)

    def downloads(self, image_id):
        """How often Glance served the image's data; None if unknown."""
        path = CONF.imaged.glance_access_log
        if not path:
            return None
        pattern = re.compile(r'GET /v2/images/%s/file' % re.escape(image_id))
        with open(path, errors='replace') as f:
            return sum(1 for line in f if pattern.search(line))


def request_context(auth_provider):
    """The RPC context of a Tempest user: its token and project."""
    return oslo_context.RequestContext(
        auth_token=auth_provider.get_token(),
        project_id=auth_provider.credentials.project_id,
        request_id='req-scenario-%s' % uuid.uuid4())
