"""The request context carried over RPC."""

import re

from oslo_context import context

from imaged import exception
from imaged.i18n import _

# Fields that end up in logs: strings without control characters.
_STRING_FIELDS = ('user', 'user_id', 'project', 'project_id', 'domain',
                  'domain_id', 'user_domain', 'user_domain_id',
                  'project_domain', 'project_domain_id', 'user_name',
                  'project_name')
# Fields that end up in HTTP headers: printable ASCII, no spaces.
_HEADER_FIELDS = ('auth_token', 'request_id', 'global_request_id')
_PRINTABLE = re.compile(r'^[\x21-\x7e]*$')
_NO_CONTROL = re.compile(r'^[^\x00-\x1f\x7f]*$')


class RequestContext(context.RequestContext):
    """oslo.context's context; ``auth_token``, when set, is used for Glance."""


def get_admin_context():
    return RequestContext(is_admin=True, overwrite=False)


def from_dict(values):
    """Rebuild a caller's context, refusing fields that could do harm.

    :raises InvalidInput: naming the field, for a non-string identifier or
        a token that is not printable ASCII (it becomes an HTTP header).
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
    return RequestContext.from_dict(values)
