"""Reading image records and data from Glance (API v2).

Only this module talks to Glance. Requests go through a keystoneauth session
built from ``[glance]``; a caller's token from the RPC context is used when
there is one, else the service's own credentials (or none, for a no-auth
Glance reached through ``endpoint_override``).
"""

import time

from glanceclient import client as glance_client
from glanceclient import exc as glance_exc
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from oslo_log import log as logging
import requests

from imaged import exception
from imaged.i18n import _

LOG = logging.getLogger(__name__)

GROUP = 'glance'

# Worth another try: the service or the network may come back.
RETRIABLE = (glance_exc.CommunicationError,
             glance_exc.HTTPInternalServerError,
             glance_exc.HTTPBadGateway,
             glance_exc.HTTPServiceUnavailable,
             ks_exc.ConnectFailure,
             ks_exc.ConnectionError,
             ks_exc.RequestTimeout,
             requests.exceptions.ConnectionError,
             requests.exceptions.ChunkedEncodingError,
             requests.exceptions.Timeout,
             ConnectionError,
             TimeoutError)


def backoff_delays(retries, first=1.0, ceiling=30.0):
    """Sleep lengths between ``retries + 1`` attempts: 1, 2, 4... seconds."""
    return [min(first * 2 ** i, ceiling) for i in range(retries)]


class GlanceAPI:
    """The few Glance calls imaged needs, with typed errors and retries."""

    def __init__(self, conf):
        self.conf = conf
        self._session = ks_loading.load_session_from_conf_options(conf, GROUP)
        # One pooled connection per concurrent call, not urllib3's 10.
        pool = ks_session.TCPKeepAliveAdapter(pool_maxsize=64)
        for scheme in ('http://', 'https://'):
            self._session.session.mount(scheme, pool)
        self._auth = ks_loading.load_auth_from_conf_options(conf, GROUP)
        self._endpoint = None

    def endpoint(self):
        """Glance's URL, from ``endpoint_override`` or the catalog."""
        if self._endpoint is None:
            adapter = ks_loading.load_adapter_from_conf_options(
                self.conf, GROUP, session=self._session, auth=self._auth)
            try:
                endpoint = adapter.get_endpoint()
            except ks_exc.ClientException as e:
                raise exception.BackendUnavailable(
                    backend='Glance',
                    reason=_('cannot find its endpoint: %s') % e)
            if not endpoint:
                raise exception.BackendUnavailable(
                    backend='Glance',
                    reason=_('no endpoint: set [glance] endpoint_override or '
                             'credentials with a service catalog'))
            self._endpoint = endpoint.rstrip('/')
        return self._endpoint

    def _client(self, context):
        endpoint = self.endpoint()
        auth = self._auth
        if context is not None and context.auth_token:
            auth = token_endpoint.Token(endpoint, context.auth_token)
        return glance_client.Client(
            '2', session=self._session, auth=auth, endpoint_override=endpoint,
            global_request_id=getattr(context, 'global_id', None))

    def _with_retries(self, image_id, what, func):
        delays = backoff_delays(self.conf.glance.num_retries)
        attempt = 0
        while True:
            try:
                return func()
            except glance_exc.HTTPNotFound:
                raise exception.ImageNotFound(image_id=image_id)
            except (glance_exc.HTTPForbidden, glance_exc.HTTPUnauthorized):
                raise exception.ImageNotAuthorized(image_id=image_id)
            except RETRIABLE as e:
                if attempt >= len(delays):
                    raise exception.BackendUnavailable(
                        backend='Glance',
                        reason=_('%(what)s of image %(id)s failed after '
                                 '%(n)d attempts: %(err)s') %
                        {'what': what, 'id': image_id, 'n': attempt + 1,
                         'err': e})
                LOG.warning('%s of image %s failed (%s); retrying in %.0fs',
                            what, image_id, e, delays[attempt])
                time.sleep(delays[attempt])
                attempt += 1

    def show(self, context, image_id):
        """The image record as a plain dict."""
        def get():
            return dict(self._client(context).images.get(image_id))
        return self._with_retries(image_id, 'Reading the record', get)

    def open_data(self, context, image_id):
        """An iterator over the image's bytes (one HTTP GET).

        Errors while iterating are raised as they come; callers retry the
        whole download.
        """
        def get():
            body = self._client(context).images.data(image_id,
                                                     do_checksum=False)
            if body is None:
                raise exception.ImageUnacceptable(
                    image_id=image_id, reason=_('Glance holds no data for it'))
            return body
        return self._with_retries(image_id, 'Opening the download', get)

    def open_response(self, context, image_id, read_timeout=None):
        """The streaming HTTP response of the image's data (one GET).

        For :mod:`imaged.image.body`, which reads and closes it. A read
        waits at most ``read_timeout`` seconds (default: the session's).
        """
        def get():
            kwargs = {}
            if read_timeout is not None:
                kwargs['timeout'] = (self._session.timeout, read_timeout)
            resp, _body = self._client(context).http_client.get(
                '/v2/images/%s/file' % image_id, **kwargs)
            if resp.status_code == 204:
                resp.close()
                raise exception.ImageUnacceptable(
                    image_id=image_id, reason=_('Glance holds no data for it'))
            return resp
        return self._with_retries(image_id, 'Opening the download', get)

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
