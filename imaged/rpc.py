"""Transport, serializer and the RPC server/client factories."""

import oslo_messaging as messaging

from imaged import context

TOPIC = 'imaged'

# Errors raised by the agent are rebuilt as the same classes by callers.
ALLOWED_EXMODS = ['imaged.exception']

_TRANSPORT = None


messaging.set_transport_defaults(control_exchange='imaged')


class RequestContextSerializer(messaging.NoOpSerializer):
    """Sends and receives :class:`imaged.context.RequestContext`."""

    def serialize_context(self, ctxt):
        # Callers may pass any oslo.context context, or a plain dict.
        return ctxt.to_dict() if hasattr(ctxt, 'to_dict') else dict(ctxt)

    def deserialize_context(self, ctxt):
        return context.from_dict(ctxt)


def get_transport(conf):
    """One transport per process, built from the global configuration."""
    global _TRANSPORT
    if _TRANSPORT is None:
        _TRANSPORT = messaging.get_rpc_transport(
            conf, allowed_remote_exmods=ALLOWED_EXMODS)
    return _TRANSPORT


def cleanup():
    global _TRANSPORT
    if _TRANSPORT is not None:
        _TRANSPORT.cleanup()
        _TRANSPORT = None


messaging.set_transport_defaults(control_exchange='imaged')


def get_server(conf, target, endpoints):
    return messaging.get_rpc_server(
        get_transport(conf), target, endpoints,
        serializer=RequestContextSerializer(),
        # Only methods marked @messaging.expose can be called remotely.
        access_policy=messaging.ExplicitRPCAccessPolicy)


def get_client(conf, target, version_cap=None):
    return messaging.get_rpc_client(
        get_transport(conf), target, version_cap=version_cap,
        serializer=RequestContextSerializer())
