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

"""Reading image records and data from Glance (API v2).

Only this module talks to Glance, and every error it lets out is one of
:mod:`imaged.exception`'s. Requests go through one keystoneauth session
built from ``[glance]``, with one of two identities:

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


from glanceclient import client as glance_client
from glanceclient.common import utils as glance_utils
from glanceclient import exc as glance_exc
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
from imaged.image import record as image_record

LOG = logging.getLogger(__name__)

GROUP = 'glance'

# Worth another try: the service or the network may come back.
RETRIABLE = (glance_exc.CommunicationError,
             glance_exc.InvalidEndpoint,  # glanceclient's ConnectTimeout
             glance_exc.HTTPInternalServerError,
             glance_exc.HTTPBadGateway,
             glance_exc.HTTPServiceUnavailable,
             ks_exc.ConnectFailure,
             ks_exc.ConnectionError,
             ks_exc.RequestTimeout,
             ks_exc.HttpServerError,  # from Keystone, fetching a token
             requests.exceptions.ConnectionError,
             requests.exceptions.ChunkedEncodingError,
             requests.exceptions.Timeout,
             ConnectionError,
             TimeoutError)

# Answers of copy_to_store().
COPY_STARTED = 'started'
COPY_BUSY = 'busy'
COPY_REFUSED = 'refused'


def _retriable(error):
    # An HTTP status glanceclient has no class for (504, 429...) is worth
    # another try; a 501 is not.
    return (isinstance(error, RETRIABLE) or
            type(error) is glance_exc.HTTPException)


def _typed(error, image_id, what, attempts=1):
    """The :mod:`imaged.exception` for a Glance or Keystone error, or None.

    :param attempts: how many times keystoneauth sent the request.
    """
    if _retriable(error):
        return exception.BackendUnavailable(
            backend='Glance',
            reason=_('%(what)s of image %(id)s failed after %(n)d attempts: '
                     '%(err)s') %
            {'what': what, 'id': image_id, 'n': attempts, 'err': error})
    if isinstance(error, glance_exc.HTTPNotFound):
        return exception.ImageNotFound(image_id=image_id)
    if isinstance(error, (glance_exc.HTTPForbidden,
                          glance_exc.HTTPUnauthorized)):
        return exception.ImageNotAuthorized(image_id=image_id)
    if isinstance(error, glance_exc.HTTPException):
        return exception.GlanceRequestFailed(
            what=what, image_id=image_id,
            reason=_('Glance answered %(code)s: %(err)s') %
            {'code': getattr(error, 'code', '?'), 'err': error})
    if isinstance(error, ks_exc.CatalogException):
        return exception.BackendUnavailable(
            backend='Glance',
            reason=_('no image endpoint in the service catalog (%(err)s); '
                     'set [glance] endpoint_override or valid_interfaces') %
            {'err': error})
    if isinstance(error, (ks_exc.AuthorizationFailure, ks_exc.HttpError,
                          ks_exc.AuthPluginException,
                          ks_exc.MissingAuthMethods)):
        return exception.BackendUnavailable(
            backend='Keystone',
            reason=_('imaged could not authenticate for %(what)s of image '
                     '%(id)s; check the credentials in [glance] and '
                     '[service_user]: %(err)s') %
            {'what': what, 'id': image_id, 'err': error})
    if isinstance(error, (ks_exc.ClientException, glance_exc.BaseException,
                          glance_exc.ClientException,
                          requests.RequestException) + RETRIABLE):
        return exception.BackendUnavailable(
            backend='Glance',
            reason=_('%(what)s of image %(id)s failed: %(err)s') %
            {'what': what, 'id': image_id, 'err': error})
    return None


class GlanceAPI:
    """The few Glance calls imaged needs, with typed errors and retries."""

    def __init__(self, conf):
        self.conf = conf
        self._session = ks_loading.load_session_from_conf_options(conf, GROUP)
        # One pooled connection per concurrent call, not urllib3's 10.
        # Answers other than image data are bounded as a whole and in size.
        pool = bounded_http.BoundedAdapter(conf, pool_maxsize=64)
        for scheme in ('http://', 'https://'):
            self._session.session.mount(scheme, pool)
        self._auth = ks_loading.load_auth_from_conf_options(conf, GROUP)
        self._service_token_auth = self._load_service_token_auth()
        self._endpoint = None
        self._has_locations_api = False  # Glance said it has API 2.17

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

    def endpoint(self):
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

    def own_auth(self):
        """The keystoneauth plugin of imaged's own user (``[glance]``), or
        None (a Glance without Keystone)."""
        return self._auth

    def session(self):
        """The keystoneauth session imaged reaches Glance and Keystone
        with."""
        return self._session

    def auth_for(self, context, image_id=None):
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

    def _client(self, context, as_service=False, retries=True,
                image_id=None):
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

    def _typed(self, error, image_id, what):
        """``_typed``, counting keystoneauth's attempts at the request."""
        opts = self.conf.glance
        retries = opts.status_code_retries \
            if isinstance(error, glance_exc.HTTPException) \
            else opts.connect_retries
        return _typed(error, image_id, what, 1 + (retries or 0))

    def _call(self, image_id, what, func):
        """``func()``, every error typed (keystoneauth retried it)."""
        try:
            return func()
        except exception.ImagedException:
            raise
        except Exception as e:
            typed = self._typed(e, image_id, what)
            if typed is None:
                raise
            raise typed from e

    def show(self, context, image_id, as_service=False):
        """The image record, an :class:`imaged.image.record.ImageRecord`.

        :param as_service: read it as imaged's own user, not the caller.
        """
        def get():
            # The record as Glance sent it: glanceclient's images.get()
            # would first fetch the image schema, one more round trip on
            # every call for a model imaged does not use.
            client = self._client(context, as_service=as_service,
                                  image_id=image_id)
            _resp, body = client.http_client.get('/v2/images/%s' % image_id)
            if not isinstance(body, dict):
                raise exception.GlanceRequestFailed(
                    what='Reading the record', image_id=image_id,
                    reason=_('Glance sent no JSON object'))
            return image_record.ImageRecord.from_glance(body, image_id)
        return self._call(image_id, 'Reading the record', get)

    def image_locations(self, context, image_id):
        """Every location of the image, from the service-only locations API.

        ``GET /v2/images/{id}/locations`` (Glance API 2.17) is asked with
        imaged's own credentials, never the caller's token.

        :returns: ``(locations, None)``, each location a dict with ``url``
            and ``metadata``; or ``(None, why)`` when Glance does not tell,
            ``why`` saying what the operator would configure.
        """
        def get():
            client = self._client(context, as_service=True)
            if not self._has_locations_api:
                # glanceclient's get_image_locations() asks /versions on
                # every call; once Glance said it has 2.17, it has it.
                if not glance_utils.has_version(client.http_client, 'v2.17'):
                    raise glance_exc.HTTPNotImplemented()
                self._has_locations_api = True
            _resp, found = client.http_client.get(
                '/v2/images/%s/locations' % image_id)
            return [dict(loc) for loc in found or []
                    if isinstance(loc, dict)]
        what = 'Reading the locations'
        try:
            return get(), None
        except glance_exc.HTTPForbidden:
            return None, _('Glance forbids its locations API to imaged\'s '
                           'user: give the user in [glance] the role of '
                           'Glance\'s fetch_image_location policy '
                           '("service" by default)')
        except glance_exc.HTTPUnauthorized:
            return None, _('Glance refused imaged\'s own credentials: set '
                           '[glance] auth_type and the service user\'s '
                           'credentials')
        except glance_exc.HTTPNotFound:
            return None, _('the image is not visible to imaged\'s own user '
                           '(private images of other projects need the '
                           '"admin" role in Glance) or Glance has no '
                           'locations API')
        except glance_exc.HTTPNotImplemented:
            return None, _('Glance has no locations API (it needs API '
                           'version 2.17, Glance 2024.2 or later)')
        except exception.ImagedException as e:
            return None, str(e)
        except Exception as e:
            typed = self._typed(e, image_id, what)
            if typed is None:
                raise
            return None, str(typed)

    def copy_to_store(self, image_id, store, context=None):
        """Ask Glance to copy the image into ``store`` for the caller.

        The ``copy-image`` import method; Glance copies in the background.
        Asked with the caller's token (and imaged's service token) when
        ``context`` has one, so Glance's ``copy_image`` policy judges the
        caller; imaged's own user asks only for calls without a token.

        :returns: ``(COPY_STARTED, None)`` when Glance accepted;
            ``(COPY_BUSY, detail)`` for a 409, an import of the image
            already running (or a store Glance does not know);
            ``(COPY_REFUSED, why)`` for any other answer.
        """
        def post():
            client = self._client(context, image_id=image_id)
            client.images.image_import(image_id, 'copy-image',
                                       stores=[store])
        what = 'Copying to store %s' % store
        try:
            post()
            return COPY_STARTED, None
        except glance_exc.HTTPConflict as e:
            return COPY_BUSY, str(e)
        except glance_exc.HTTPForbidden as e:
            return COPY_REFUSED, _(
                'Glance\'s copy_image policy ("admin" by default) refuses '
                'the caller: %s') % e
        except glance_exc.HTTPNotFound as e:
            return COPY_REFUSED, _(
                'the image is not visible to the caller: %s') % e
        except exception.ImagedException as e:
            return COPY_REFUSED, str(e)
        except Exception as e:
            typed = self._typed(e, image_id, what)
            if typed is None:
                raise
            return COPY_REFUSED, str(typed)

    def rbd_stores(self):
        """Glance's RBD stores, from ``GET /v2/info/stores/detail``.

        Asked as imaged's own user (the ``stores_info_detail`` policy wants
        the admin or service role; Glance 2025.1 and later show a store's
        fsid).

        :returns: ``[{'id', 'pool', 'fsid'}]`` (``fsid`` may be None), or
            None when Glance does not describe its stores (no multiple
            stores, an older Glance, a policy that refuses imaged).
        :raises: BackendUnavailable when Glance cannot be reached.
        """
        try:
            client = self._client(None, as_service=True)
            _resp, body = client.http_client.get('/v2/info/stores/detail')
        except (glance_exc.HTTPForbidden, glance_exc.HTTPUnauthorized,
                glance_exc.HTTPNotFound, glance_exc.HTTPNotImplemented,
                glance_exc.HTTPBadRequest) as e:
            LOG.debug('Glance does not describe its stores to imaged: %s', e)
            return None
        except exception.ImagedException:
            raise
        except (glance_exc.BaseException, glance_exc.ClientException,
                ks_exc.ClientException, requests.RequestException) as e:
            raise exception.BackendUnavailable(
                backend='Glance',
                reason=_('reading its stores failed: %s') % e) from e
        stores = body.get('stores') if isinstance(body, dict) else None
        if not isinstance(stores, list):
            return None
        found = []
        for store in stores:
            if not isinstance(store, dict) or store.get('type') != 'rbd':
                continue
            props = store.get('properties') or {}
            if props.get('pool'):
                found.append({'id': store.get('id'), 'pool': props['pool'],
                              'fsid': props.get('fsid') or None})
        return found

    def open_response(self, context, image_id, read_timeout=None):
        """The streaming HTTP response of the image's data (one GET).

        For :mod:`imaged.image.body`, which reads and closes it. A read
        waits at most ``read_timeout`` seconds (default: the session's).
        """
        def get():
            kwargs = {}
            if read_timeout is not None:
                kwargs['timeout'] = (self._session.timeout, read_timeout)
            resp, _body = self._client(
                context, image_id=image_id).http_client.get(
                '/v2/images/%s/file' % image_id, **kwargs)
            if resp.status_code == 204:
                resp.close()
                raise exception.ImageUnacceptable(
                    image_id=image_id, reason=_('Glance holds no data for it'))
            return resp
        return self._call(image_id, 'Opening the download', get)

    def add_location(self, context, image_id, url):
        """Register ``url`` as the data of queued image ``image_id``.

        Glance's ``POST /v2/images/{id}/locations`` (API 2.17, Glance
        2024.2 and later): service only (the caller's token with imaged's
        service token, or imaged's own). Glance finishes in a task (hash,
        status ``active``); wait with :meth:`show`. An older Glance gets
        the image's locations ``PATCH`` (``add /locations/-``), which it
        allows only with ``show_multiple_locations`` on and a policy that
        lets the caller set locations; it makes the image ``active`` at
        once.

        :raises LocationRefused: Glance answered 4xx (a store it does not
            know, an image that is not queued, a Glance without the API
            that does not allow the PATCH either).
        """
        def post():
            client = self._client(context)
            if not self._has_locations_api:
                if not glance_utils.has_version(client.http_client, 'v2.17'):
                    LOG.info('Glance has no locations API (2.17): adding '
                             'the location of image %s with a PATCH',
                             image_id)
                    client.images.add_location(image_id, url, {})
                    return
                self._has_locations_api = True
            client.http_client.post(
                '/v2/images/%s/locations' % image_id, data={'url': url})
        try:
            return post()
        except (glance_exc.HTTPBadRequest, glance_exc.HTTPConflict,
                glance_exc.HTTPForbidden, glance_exc.HTTPNotFound,
                glance_exc.HTTPNotImplemented,
                glance_exc.HTTPMethodNotAllowed) as e:
            raise exception.LocationRefused(
                image_id=image_id, url=url,
                reason='%s %s' % (getattr(e, 'code', '?'), e)) from e
        except Exception as e:
            typed = self._typed(e, image_id, 'Adding a location')
            if typed is None:
                raise
            raise typed from e

    def set_properties(self, context, image_id, properties):
        """Set extra properties of image ``image_id`` (``PATCH``), as the
        caller."""
        return self._call(image_id, 'Updating', lambda: self._client(
            context).images.update(image_id, **properties))

    def upload(self, context, image_id, data, size):
        """``PUT /v2/images/{id}/file`` of ``size`` bytes read from the
        file-like ``data``, as the caller. Not retried: a stream cannot be
        sent twice."""
        return self._call(image_id, 'Uploading', lambda: self._client(
            context, retries=False).images.upload(image_id, data,
                                                  image_size=size))

    def sees_every_image(self):
        """Whether Glance shows imaged's own user every image, so that a
        404 for it means the image is gone, not private to a project.

        Glance shows other projects' private images only to an admin
        context: the ``admin`` role in imaged's token, or a Glance without
        Keystone (its unauthenticated contexts are admin).

        :raises: BackendUnavailable when Keystone cannot tell.
        """
        roles = self.user_roles()
        return roles is None or 'admin' in roles

    def api_versions(self):
        """The API versions Glance offers (``GET /versions``), e.g.
        ``['2.17', '2.16', ...]``.

        :raises BackendUnavailable: Glance does not answer.
        """
        try:
            url = self.endpoint()
            resp = self._session.get(url + '/versions', authenticated=False,
                                     raise_exc=False, timeout=10)
        except (ks_exc.ClientException, requests.RequestException) as e:
            raise exception.BackendUnavailable(
                backend='Glance', reason=_('%(url)s is unreachable: %(err)s')
                % {'url': self._endpoint, 'err': e})
        # Glance answers /versions with 300 Multiple Choices.
        if resp.status_code >= 400:
            raise exception.BackendUnavailable(
                backend='Glance', reason=_('%(url)s/versions answered '
                                           '%(code)s') %
                {'url': url, 'code': resp.status_code})
        versions = resp.json().get('versions', [])
        return [v.get('id', '').lstrip('v') for v in versions]

    def user_roles(self):
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

    def check_health(self):
        """Problems reaching Glance, as strings (empty when it answers)."""
        try:
            url = self.endpoint()
            resp = self._session.get(url + '/versions', authenticated=False,
                                     raise_exc=False, timeout=10)
        except exception.BackendUnavailable as e:
            return [str(e)]
        except (ks_exc.ClientException, requests.RequestException) as e:
            return [_('Glance at %(url)s is unreachable: %(err)s') %
                    {'url': self._endpoint, 'err': e}]
        if resp.status_code >= 500:
            return [_('Glance at %(url)s answered %(code)s') %
                    {'url': url, 'code': resp.status_code}]
        return []
