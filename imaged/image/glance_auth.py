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

"""How imaged reaches Glance: one keystoneauth session built from
``[glance]``, Glance's endpoint, and the identity each request is made with:

* on a caller's behalf (the RPC context carries a token): the caller's token,
  plus a service token of imaged's own user (``[service_user]``), so that a
  token which expires during a long call is still accepted;
* imaged's own business (the service-only locations API, the stores'
  description, the purge of deleted images) and the calls :mod:`imaged.policy`
  lets act as imaged (a Glance without Keystone, a trusted bus, a precache,
  a tokenless call's public image): imaged's service user from ``[glance]``
  alone (or no credentials, for a no-auth Glance reached through
  ``endpoint_override``). Any other call without a token gets
  ``NotAuthorized``, never imaged's rights.
"""

from typing import Any

from glanceclient import client as glance_client
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import noauth
from keystoneauth1 import service_token
from keystoneauth1 import token_endpoint
from oslo_log import log as logging
import requests

from imaged.conf import service_user as service_user_conf
from imaged import exception
from imaged.i18n import _
from imaged.image import bounded_http

LOG = logging.getLogger(__name__)

GROUP = 'glance'


class GlanceAuth:
    """The session, endpoint and identities of imaged's Glance requests."""

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        self._session = ks_loading.load_session_from_conf_options(conf, GROUP)
        # One pooled connection per concurrent call, not urllib3's 10.
        # Answers other than image data are bounded as a whole and in size.
        pool = bounded_http.BoundedAdapter(conf, pool_maxsize=64)
        for scheme in ('http://', 'https://'):
            self._session.session.mount(scheme, pool)
        self._auth: Any = ks_loading.load_auth_from_conf_options(conf,
                                                                 GROUP)
        self._service_token_auth = self._load_service_token_auth()
        self._endpoint: str | None = None

    def _load_service_token_auth(self):
        """The plugin whose token goes with a caller's, or None."""
        if not self.conf.service_user.send_service_user_token:
            return None
        auth = ks_loading.load_auth_from_conf_options(
            self.conf, service_user_conf.SERVICE_USER_GROUP)
        if auth is None:
            auth = self._auth  # imaged's own service user
        if auth is None or isinstance(auth, noauth.NoAuth):
            LOG.info('No credentials in [service_user] or [glance]: calls '
                     'on a caller\'s behalf carry its token alone')
            return None
        return auth

    def endpoint(self) -> str:
        """Glance's URL, from ``endpoint_override`` or the catalog."""
        if self._endpoint is None:
            adapter = ks_loading.load_adapter_from_conf_options(
                self.conf, GROUP, session=self._session, auth=self._auth)
            endpoint = adapter.get_endpoint()
            if not endpoint:
                raise exception.BackendUnavailable(
                    backend='Glance',
                    reason=_('no endpoint: set [glance] endpoint_override or '
                             'credentials with a service catalog'))
            self._endpoint = endpoint.rstrip('/')
        return self._endpoint

    def own_auth(self) -> Any:
        """The keystoneauth plugin of imaged's own user (``[glance]``), or
        None (a Glance without Keystone)."""
        return self._auth

    def session(self) -> Any:
        """The keystoneauth session imaged reaches Glance and Keystone
        with."""
        return self._session

    def auth_for(self, context: Any, image_id: str | None = None) -> Any:
        """The keystoneauth plugin a request on ``context``'s behalf uses.

        The caller's token when it has one. Without, imaged's own user only
        for imaged's own business (``context`` None), a trusted caller
        (:mod:`imaged.policy`), or a tokenless call for ``image_id`` once
        its record was found public or community: never by default.

        :raises NotAuthorized: a tokenless call asks for anything else.
        """
        token = getattr(context, 'auth_token', None)
        if not token:
            caller = getattr(context, 'caller', None)
            if context is None or (caller is not None and
                                   caller.reads_as_imaged(image_id)):
                return self._auth
            raise exception.NotAuthorized(
                action=_('read image %s in Glance') % image_id,
                reason=_('the call carries no token'))
        user_auth = token_endpoint.Token(self.endpoint(), token)
        if self._service_token_auth is None:
            return user_auth
        return service_token.ServiceTokenAuthWrapper(
            user_auth=user_auth, service_auth=self._service_token_auth)

    def client(self, context: Any, as_service: bool = False,
               retries: bool = True, image_id: str | None = None) -> Any:
        """A glanceclient on our session; ``retries=False`` for a request
        whose body cannot be sent twice."""
        endpoint = self.endpoint()
        auth = self._auth if as_service else self.auth_for(context,
                                                           image_id)
        opts = self.conf.glance
        return glance_client.Client(
            '2', session=self._session, auth=auth, endpoint_override=endpoint,
            global_request_id=getattr(context, 'global_id', None),
            connect_retries=opts.connect_retries if retries else 0,
            connect_retry_delay=opts.connect_retry_delay,
            status_code_retries=opts.status_code_retries if retries else 0,
            status_code_retry_delay=opts.status_code_retry_delay,
            retriable_status_codes=[
                int(code) for code in opts.retriable_status_codes or ()])

    def user_roles(self) -> list[str] | None:
        """The roles in imaged's own token (``[glance]`` credentials), or
        None without Keystone.

        :raises BackendUnavailable: Keystone cannot tell.
        """
        if self._auth is None or isinstance(self._auth, noauth.NoAuth):
            return None
        try:
            access = self._auth.get_access(self._session)
        except (ks_exc.ClientException, requests.RequestException) as e:
            raise exception.BackendUnavailable(
                backend='Keystone',
                reason=_('cannot read the roles of imaged\'s user: %s') % e)
        return sorted(role.lower() for role in
                      getattr(access, 'role_names', None) or [])
