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

"""What a Glance or Keystone error means to imaged: worth another try, or
which of :mod:`imaged.exception`'s errors it is."""

from glanceclient import exc as glance_exc
from keystoneauth1 import exceptions as ks_exc
import requests

from imaged import exception
from imaged.i18n import _

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


def retriable(error: BaseException) -> bool:
    # An HTTP status glanceclient has no class for (504, 429...) is worth
    # another try; a 501 is not.
    return (isinstance(error, RETRIABLE) or
            type(error) is glance_exc.HTTPException)


def typed(error: BaseException, image_id: str | None, what: str,
          attempts: int = 1) -> exception.ImagedException | None:
    """The :mod:`imaged.exception` for a Glance or Keystone error, or None.

    :param attempts: how many times keystoneauth sent the request.
    """
    if retriable(error):
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
