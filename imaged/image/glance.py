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

"""Reading image records and data from Glance (API v2), and the few other
Glance calls imaged makes.

Only this module talks to Glance (through the session and identities of
:mod:`imaged.image.glance_auth`), and every error it lets out is one of
:mod:`imaged.exception`'s (:mod:`imaged.image.glance_errors`).
"""

from typing import Any

from glanceclient.common import utils as glance_utils
from glanceclient import exc as glance_exc
from keystoneauth1 import exceptions as ks_exc
from oslo_log import log as logging
import requests

from imaged import exception
from imaged.i18n import _
from imaged.image import glance_auth
from imaged.image import glance_errors
from imaged.image import record as image_record

LOG = logging.getLogger(__name__)

# Answers of copy_to_store().
COPY_STARTED = 'started'
COPY_BUSY = 'busy'
COPY_REFUSED = 'refused'

# Image locations as Glance lists them: ``url`` and ``metadata`` each.
Locations = list[dict[str, Any]]


class GlanceAPI:
    """The few Glance calls imaged needs, with typed errors and retries."""

    def __init__(self, conf: Any,
                 auth: glance_auth.GlanceAuth | None = None) -> None:
        self.conf = conf
        self.auth = auth or glance_auth.GlanceAuth(conf)
        self._has_locations_api = False  # Glance said it has API 2.17

    def own_auth(self) -> Any:
        """The keystoneauth plugin of imaged's own user (``[glance]``), or
        None (a Glance without Keystone)."""
        return self.auth.own_auth()

    def session(self) -> Any:
        """The keystoneauth session imaged reaches Glance and Keystone
        with."""
        return self.auth.session()

    def _typed(self, error, image_id, what):
        """``_typed``, counting keystoneauth's attempts at the request."""
        opts = self.conf.glance
        retries = opts.status_code_retries \
            if isinstance(error, glance_exc.HTTPException) \
            else opts.connect_retries
        return glance_errors.typed(error, image_id, what, 1 + (retries or 0))

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

    def show(self, context: Any, image_id: str,
             as_service: bool = False) -> image_record.ImageRecord:
        """The image record, an :class:`imaged.image.record.ImageRecord`.

        :param as_service: read it as imaged's own user, not the caller.
        """
        def get():
            # The record as Glance sent it: glanceclient's images.get()
            # would first fetch the image schema, one more round trip on
            # every call for a model imaged does not use.
            client = self.auth.client(context, as_service=as_service,
                                      image_id=image_id)
            _resp, body = client.http_client.get('/v2/images/%s' % image_id)
            if not isinstance(body, dict):
                raise exception.GlanceRequestFailed(
                    what='Reading the record', image_id=image_id,
                    reason=_('Glance sent no JSON object'))
            return image_record.ImageRecord.from_glance(body, image_id)
        return self._call(image_id, 'Reading the record', get)

    def image_locations(self, context: Any,
                        image_id: str) -> tuple[Locations | None, str | None]:
        """Every location of the image, from the service-only locations API.

        ``GET /v2/images/{id}/locations`` (Glance API 2.17) is asked with
        imaged's own credentials, never the caller's token.

        :returns: ``(locations, None)``, each location a dict with ``url``
            and ``metadata``; or ``(None, why)`` when Glance does not tell,
            ``why`` saying what the operator would configure.
        """
        def get():
            client = self.auth.client(context, as_service=True)
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

    def copy_to_store(self, image_id: str, store: str,
                      context: Any = None) -> tuple[str, str | None]:
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
            client = self.auth.client(context, image_id=image_id)
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

    def rbd_stores(self) -> list[dict[str, Any]] | None:
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
            client = self.auth.client(None, as_service=True)
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

    def open_response(self, context: Any, image_id: str,
                      read_timeout: float | None = None) -> Any:
        """The streaming HTTP response of the image's data (one GET).

        For :mod:`imaged.image.body`, which reads and closes it. A read
        waits at most ``read_timeout`` seconds (default: the session's).
        """
        def get():
            kwargs = {}
            if read_timeout is not None:
                kwargs['timeout'] = (self.auth.session().timeout, read_timeout)
            resp, _body = self.auth.client(
                context, image_id=image_id).http_client.get(
                '/v2/images/%s/file' % image_id, **kwargs)
            if resp.status_code == 204:
                resp.close()
                raise exception.ImageUnacceptable(
                    image_id=image_id, reason=_('Glance holds no data for it'))
            return resp
        return self._call(image_id, 'Opening the download', get)

    def add_location(self, context: Any, image_id: str, url: str) -> None:
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
            client = self.auth.client(context)
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

    def set_properties(self, context: Any, image_id: str,
                       properties: dict[str, Any]) -> None:
        """Set extra properties of image ``image_id`` (``PATCH``), as the
        caller."""
        return self._call(image_id, 'Updating', lambda: self.auth.client(
            context).images.update(image_id, **properties))

    def upload(self, context: Any, image_id: str, data: Any,
               size: int) -> None:
        """``PUT /v2/images/{id}/file`` of ``size`` bytes read from the
        file-like ``data``, as the caller. Not retried: a stream cannot be
        sent twice."""
        return self._call(image_id, 'Uploading', lambda: self.auth.client(
            context, retries=False).images.upload(image_id, data,
                                                  image_size=size))

    def user_roles(self) -> list[str] | None:
        """The roles in imaged's own token, lower case (None without
        Keystone); ``imaged-status`` reports them.

        :raises BackendUnavailable: Keystone cannot tell.
        """
        return self.auth.user_roles()

    def sees_every_image(self) -> bool:
        """Whether Glance shows imaged's own user every image, so that a
        404 for it means the image is gone, not private to a project.

        Glance shows other projects' private images only to an admin
        context: the ``admin`` role in imaged's token, or a Glance without
        Keystone (its unauthenticated contexts are admin).

        :raises: BackendUnavailable when Keystone cannot tell.
        """
        roles = self.user_roles()
        return roles is None or 'admin' in roles

    def api_versions(self) -> list[str]:
        """The API versions Glance offers (``GET /versions``), e.g.
        ``['2.17', '2.16', ...]``.

        :raises BackendUnavailable: Glance does not answer.
        """
        url = None  # (no endpoint yet)
        try:
            url = self.auth.endpoint()
            resp = self._versions(url)
        except (ks_exc.ClientException, requests.RequestException) as e:
            raise exception.BackendUnavailable(
                backend='Glance', reason=_('%(url)s is unreachable: %(err)s')
                % {'url': url, 'err': e})
        # Glance answers /versions with 300 Multiple Choices.
        if resp.status_code >= 400:
            raise exception.BackendUnavailable(
                backend='Glance', reason=_('%(url)s/versions answered '
                                           '%(code)s') %
                {'url': url, 'code': resp.status_code})
        versions = resp.json().get('versions', [])
        return [v.get('id', '').lstrip('v') for v in versions]

    def _versions(self, url):
        return self.auth.session().get(url + '/versions', authenticated=False,
                                       raise_exc=False, timeout=10)

    def check_health(self) -> list[str]:
        """Problems reaching Glance, as strings (empty when it answers)."""
        url = None  # (no endpoint yet)
        try:
            url = self.auth.endpoint()
            resp = self._versions(url)
        except exception.BackendUnavailable as e:
            return [str(e)]
        except (ks_exc.ClientException, requests.RequestException) as e:
            return [_('Glance at %(url)s is unreachable: %(err)s') %
                    {'url': url, 'err': e}]
        if resp.status_code >= 500:
            return [_('Glance at %(url)s answered %(code)s') %
                    {'url': url, 'code': resp.status_code}]
        return []
