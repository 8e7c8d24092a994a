"""The request context carried over RPC."""

from oslo_context import context


class RequestContext(context.RequestContext):
    """oslo.context's context; ``auth_token``, when set, is used for Glance."""


def get_admin_context():
    return RequestContext(is_admin=True, overwrite=False)


def from_dict(values):
    """Rebuild a context from what a caller sent; anything else is ignored."""
    return RequestContext.from_dict(values or {})
