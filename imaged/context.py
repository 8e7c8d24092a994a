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

"""The request context carried over RPC."""

import math
import re

from oslo_context import context

from imaged import exception
from imaged.i18n import _
from imaged import policy

# Fields that end up in logs: strings without control characters.
_STRING_FIELDS = ('user', 'user_id', 'project', 'project_id', 'domain',
                  'domain_id', 'user_domain', 'user_domain_id',
                  'project_domain', 'project_domain_id', 'user_name',
                  'project_name')
# Fields that end up in HTTP headers: printable ASCII, no spaces.
_HEADER_FIELDS = ('auth_token', 'request_id', 'global_request_id')
_PRINTABLE = re.compile(r'^[\x21-\x7e]*$')
_NO_CONTROL = re.compile(r'^[^\x00-\x1f\x7f]*$')
# How long the caller waits for the answer, in seconds from when it sent
# the call; an agent that does not know the field ignores it.
CALL_TIMEOUT = 'imaged_call_timeout'
MAX_CALL_TIMEOUT = 7 * 86400


class RequestContext(context.RequestContext):
    """oslo.context's context; ``auth_token``, when set, is used for Glance.

    ``call_timeout`` is how long the caller waits (``None``: not said);
    the agent attaches the call's :class:`imaged.deadline.Deadline` as
    ``deadline``, and who Keystone says the caller is
    (:class:`imaged.policy.Caller`) as ``caller``: the context's own
    ``project_id``, ``user_id`` and ``roles`` are only claims until then.
    A create's trusted certificate ids (RPC 1.3) are attached as
    ``trusted_certs``, read where the image's signature is checked.
    """

    FROM_DICT_EXTRA_KEYS = [CALL_TIMEOUT]

    def __init__(self, imaged_call_timeout=None, **kwargs):
        super().__init__(**kwargs)
        self.call_timeout = imaged_call_timeout
        self.deadline = None
        self.caller = None
        self.trusted_certs = None

    def to_dict(self):
        values = super().to_dict()
        if self.call_timeout is not None:
            values[CALL_TIMEOUT] = self.call_timeout
        return values


def with_call_timeout(ctxt, seconds):
    """``ctxt`` as sent over RPC, saying that its caller waits ``seconds``.

    ``ctxt`` may be any oslo.context context or a dict; it is not changed.
    """
    values = ctxt.to_dict() if hasattr(ctxt, 'to_dict') else dict(ctxt or {})
    values[CALL_TIMEOUT] = min(seconds, MAX_CALL_TIMEOUT)
    return values


def get_admin_context():
    """The context of imaged's own business (periodic tasks): it acts as
    imaged's own user."""
    ctxt = RequestContext(is_admin=True, overwrite=False)
    ctxt.caller = policy.trusted()
    return ctxt


def from_dict(values):
    """Rebuild a caller's context, refusing fields that could do harm.

    :raises InvalidInput: naming the field, for a non-string identifier, a
        token that is not printable ASCII (it becomes an HTTP header) or a
        call timeout that is not a number of seconds in 0..7 days.
    """
    values = values or {}
    if not isinstance(values, dict):
        raise exception.InvalidInput(argument='context',
                                     reason=_('must be a mapping'))
    for field in _STRING_FIELDS + _HEADER_FIELDS:
        value = values.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise exception.InvalidInput(
                argument='context %s' % field,
                reason=_('must be a string, not %s') % type(value).__name__)
        pattern = _PRINTABLE if field in _HEADER_FIELDS else _NO_CONTROL
        if len(value) > 8192 or not pattern.match(value):
            raise exception.InvalidInput(
                argument='context %s' % field,
                reason=_('must be printable text of at most 8192 '
                         'characters') + (
                    _(', without spaces') if field in _HEADER_FIELDS else ''))
    _check_call_timeout(values.get(CALL_TIMEOUT))
    return RequestContext.from_dict(values)


def _check_call_timeout(value):
    if value is None:
        return
    if type(value) not in (int, float) or not math.isfinite(value) or \
            not 0 < value <= MAX_CALL_TIMEOUT:
        raise exception.InvalidInput(
            argument='context %s' % CALL_TIMEOUT,
            reason=_('must be a number of seconds above 0 and at most '
                     '%(max)d, not %(value)s') %
            {'max': MAX_CALL_TIMEOUT, 'value': str(value)[:40]})
