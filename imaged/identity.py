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

"""Who a token belongs to: Keystone's answer, remembered for a while.

The only code that asks Keystone about callers' tokens. A token is
validated as keystonemiddleware does for an OpenStack API: ``GET
/v3/auth/tokens`` with the token in ``X-Subject-Token``, asked as imaged's
own service user (``[glance]`` credentials), with ``allow_expired=1``: a
call may wait in imaged's queue past its token's expiry, and imaged then
goes on with its service token beside the caller's (``[service_user]``);
Keystone itself bounds how long after expiry it still answers (its
``[token] allow_expired_window``, 48 hours by default).

Answers are remembered until the token expires (an expired one for
``[callers] token_cache_time``), and never for longer than that option, in
at most ``[callers] token_cache_size`` entries. The token itself is never
kept as a key, nor logged.
"""

import datetime
import hashlib
import math
import threading
import time

import cachetools
from keystoneauth1 import access as ks_access
from keystoneauth1 import exceptions as ks_exc
from oslo_log import log as logging
import requests

from imaged import deadline as call_deadline
from imaged import exception
from imaged.i18n import _

LOG = logging.getLogger(__name__)


class Identity:
    """Whom Keystone says a token belongs to."""

    __slots__ = ('user_id', 'project_id', 'roles', 'expires')

    def __init__(self, user_id, project_id, roles, expires=None):
        self.user_id = user_id
        self.project_id = project_id
        self.roles = frozenset(role.lower() for role in roles)
        self.expires = expires  # seconds since the epoch, or None

    def __repr__(self):
        return 'Identity(user=%s, project=%s, roles=%s)' % (
            self.user_id, self.project_id, ','.join(sorted(self.roles)))


def _digest(token):
    return hashlib.sha256(token.encode('utf-8')).hexdigest()


def _epoch(when):
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


class TokenValidator:
    """Validates callers' tokens with Keystone, as imaged's service user.

    :param session: the keystoneauth session imaged reaches Keystone and
        Glance with; ``auth`` its plugin for imaged's own user.
    :param wall_clock: seconds since the epoch (tokens expire by it).
    :param clock: a monotonic clock, for the cache.
    """

    def __init__(self, conf, session, auth, wall_clock=time.time,
                 clock=time.monotonic):
        self.conf = conf
        self._session = session
        self._auth = auth
        self._wall_clock = wall_clock
        self._clock = clock
        self._cache = cachetools.TLRUCache(
            conf.callers.token_cache_size, self._until, timer=clock)
        self._lock = threading.Lock()
        self._asking = {}  # token digest -> [lock, callers waiting]

    def _until(self, _key, identity, now):
        """When (on the monotonic clock) an answer is forgotten."""
        keep = self.conf.callers.token_cache_time
        if identity.expires is not None:
            left = identity.expires - self._wall_clock()
            if left > 0:
                keep = min(keep, left)
        return now + keep

    def validate(self, token, deadline=call_deadline.UNBOUNDED):
        """The :class:`Identity` of ``token``.

        :param deadline: the call's :class:`imaged.deadline.Deadline`: the
            wait for another call's validation of the same token and the
            request to Keystone end by it.
        :raises NotAuthorized: Keystone does not know the token (forged,
            revoked, or expired beyond its ``allow_expired_window``).
        :raises KeystoneUnavailable: Keystone cannot be asked now, or does
            not let imaged's user validate tokens.
        :raises Timeout: the deadline passed first.
        """
        if not self.conf.callers.token_cache_time:
            return self._ask_keystone(token, deadline)
        key = _digest(token)
        found = self._remembered(key)
        if found is not None:
            return found
        # One question to Keystone per token at a time: a storm of calls
        # with one caller's new token waits for the first answer.
        with self._lock:
            asking = self._asking.setdefault(key, [threading.Lock(), 0])
            asking[1] += 1
        try:
            limit = deadline.cap(self._wait_limit())
            if not asking[0].acquire(timeout=limit):
                if limit < self._wait_limit():
                    raise self._timeout(deadline)
                raise exception.KeystoneUnavailable(
                    reason=_('another call\'s validation of the same token '
                             'took more than %d s') % self._wait_limit())
            try:
                found = self._remembered(key)
                if found is None:
                    found = self._ask_keystone(token, deadline)
                    with self._lock:
                        self._cache[key] = found
                return found
            finally:
                asking[0].release()
        finally:
            with self._lock:
                asking[1] -= 1
                if not asking[1]:
                    del self._asking[key]

    def _remembered(self, key):
        with self._lock:
            return self._cache.get(key)

    def _attempts(self):
        opts = self.conf.glance
        return 1 + max(opts.connect_retries or 0,
                       opts.status_code_retries or 0)

    def _wait_limit(self):
        """Seconds a validation may take: keystoneauth's attempts, each
        bounded by the session's timeout, and their delays."""
        return self._attempts() * ((self.conf.glance.timeout or 60) + 30)

    @staticmethod
    def _timeout(deadline):
        return exception.Timeout(
            what=_('the validation of the caller\'s token by Keystone'),
            seconds=round(deadline.elapsed(), 1))

    def _ask_keystone(self, token, deadline=call_deadline.UNBOUNDED):
        """Keystone's answer, every attempt's socket wait bounded so that
        all of them fit in what is left of ``deadline``."""
        opts = self.conf.glance
        timeout = opts.timeout or 60
        if deadline.remaining() != math.inf:
            if deadline.expired():
                raise self._timeout(deadline)
            timeout = min(timeout, deadline.remaining() / self._attempts())
        try:
            resp = self._session.get(
                '/auth/tokens?allow_expired=1',
                headers={'X-Subject-Token': token}, auth=self._auth,
                endpoint_filter={
                    'service_type': 'identity',
                    'interface': self.conf.callers.keystone_interface,
                    'region_name': opts.region_name,
                    'version': (3, 0)},
                connect_retries=opts.connect_retries,
                status_code_retries=opts.status_code_retries,
                retriable_status_codes=[500, 502, 503, 504, 429],
                raise_exc=False, timeout=timeout)
        except (ks_exc.ClientException, requests.RequestException) as e:
            if deadline.expired():
                raise self._timeout(deadline) from e
            raise exception.KeystoneUnavailable(
                reason=_('%(type)s: %(err)s') %
                {'type': type(e).__name__, 'err': e}) from e
        if resp.status_code == 404:
            raise exception.NotAuthorized(
                action=_('act with this token'),
                reason=_('Keystone does not know it (invalid, revoked or '
                         'expired too long ago)'))
        if resp.status_code in (401, 403):
            raise exception.KeystoneUnavailable(
                reason=_('Keystone answered %d: imaged\'s user in [glance] '
                         'may not validate tokens (it needs the "service" '
                         'or "admin" role)') % resp.status_code)
        if resp.status_code != 200:
            raise exception.KeystoneUnavailable(
                reason=_('Keystone answered %d') % resp.status_code)
        try:
            access = ks_access.create(resp=resp)
            identity = Identity(access.user_id, access.project_id,
                                access.role_names or (),
                                _epoch(access.expires))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise exception.KeystoneUnavailable(
                reason=_('its answer is not a token: %s') % e) from e
        if identity.expires is not None and \
                identity.expires <= self._wall_clock():
            LOG.info('Call with a token of user %s that expired %.0f s ago: '
                     'accepted (Keystone still validates it)',
                     identity.user_id,
                     self._wall_clock() - identity.expires)
        return identity
