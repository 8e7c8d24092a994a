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

"""What the tests of a Glance behind Keystone need from the stack.

The stack's users (``stack.env``): ``DEMO`` owns the test images and is the
caller whose token travels in the RPC context; ``IMAGED`` is the agent's
service user. Glance keeps its secure defaults: image records show no
location.
"""

import io
import re
import uuid

from glanceclient import client as glance_client_module
from keystoneauth1.identity import v3 as ks_v3
from keystoneauth1 import session as ks_session

from imaged import context
from tests.functional import base


def session(who='DEMO'):
    """A keystoneauth session of stack user ``who`` (DEMO or IMAGED)."""
    return base.keystone_session(who)


def fresh_token(who='DEMO'):
    """A token of its own (not the session's cached one), and its project."""
    env = base.stack()
    auth = ks_v3.Password(
        auth_url=env['OS_AUTH_URL'], username=env['%s_USER' % who],
        password=env['%s_PASSWORD' % who],
        project_name=env['%s_PROJECT' % who],
        user_domain_name=env['OS_USER_DOMAIN_NAME'],
        project_domain_name=env['OS_PROJECT_DOMAIN_NAME'])
    access = auth.get_access(ks_session.Session(timeout=30))
    return access


def user_context(access=None):
    """The RPC context a caller sends: the demo user's token."""
    if access is None:
        return base.user_context('DEMO')
    return context.RequestContext(user_id=access.user_id,
                                  project_id=access.project_id,
                                  auth_token=access.auth_token)


def glance_options(**extra):
    """imaged's ``[glance]``: its service user, Glance's URL."""
    options = dict(base.glance_options(), num_retries='1', timeout='20',
                   progress_interval='1')
    options.update(extra)
    return options


class Images:
    """The demo user's images in a chosen store, removed after the test."""

    def __init__(self, test):
        self.test = test
        endpoint = base.stack()['GLANCE_URL']
        self.client = glance_client_module.Client(
            '2', session=session('DEMO'), endpoint_override=endpoint)
        self.service = glance_client_module.Client(
            '2', session=session('IMAGED'), endpoint_override=endpoint)

    def create(self, data, store, disk_format='raw'):
        image = self.client.images.create(
            name='imaged-test-%s' % uuid.uuid4().hex[:8],
            disk_format=disk_format, container_format='bare')
        self.test.addCleanup(self.delete, image['id'])
        self.client.images.upload(image['id'], io.BytesIO(data),
                                  image_size=len(data), backend=store)
        return dict(self.client.images.get(image['id']))

    def record(self, image_id):
        return dict(self.client.images.get(image_id))

    def stores(self, image_id):
        return set(filter(None, self.record(image_id).get(
            'stores', '').split(',')))

    def locations(self, image_id):
        """Every location, read as imaged's service user."""
        return [loc['url'] for loc in
                self.service.images.get_image_locations(image_id)]

    def delete(self, image_id):
        try:
            self.client.images.delete(image_id)
        except Exception:  # already gone
            pass

    @staticmethod
    def requests(image_id, method, suffix):
        """How many ``method /v2/images/<id><suffix>`` Glance served."""
        pattern = re.compile(r'%s /v2/images/%s%s[ ?]' % (
            method, image_id, re.escape(suffix)))
        with open(base.stack()['GLANCE_ACCESS_LOG'], errors='replace') as f:
            return sum(1 for line in f if pattern.search(line))

    def downloads(self, image_id):
        return self.requests(image_id, 'GET', '/file')
