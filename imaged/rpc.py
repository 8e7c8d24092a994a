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

"""Transport, serializer and the RPC server/client factories."""

from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_messaging import opts as messaging_opts

from imaged import context

LOG = logging.getLogger(__name__)

TOPIC = 'imaged'
# Executor threads kept for short calls, however many long calls wait.
SHORT_CALL_THREADS = 16

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


def get_server(conf, target, endpoints):
    """The RPC server; start it with ``executor_threads``' count."""
    return messaging.get_rpc_server(
        get_transport(conf), target, endpoints,
        serializer=RequestContextSerializer(),
        # Only methods marked @messaging.expose can be called remotely.
        access_policy=messaging.ExplicitRPCAccessPolicy)


def executor_threads(conf, long_calls):
    """Threads of the server's executor: one for each of ``long_calls``
    (running or queued) and ``SHORT_CALL_THREADS`` more.

    That is the default of ``executor_thread_pool_size`` (registered by
    ``get_server``); a smaller value set by the operator is raised to it.
    """
    needed = long_calls + SHORT_CALL_THREADS
    messaging_opts.set_defaults(conf, executor_thread_pool_size=needed)
    configured = conf.executor_thread_pool_size
    if configured >= needed:
        return configured
    LOG.warning('executor_thread_pool_size = %(configured)d would let long '
                'calls take every thread: using %(needed)d (max_concurrent_'
                'long_calls + max_queued_long_calls + %(short)d for short '
                'calls)',
                {'configured': configured, 'needed': needed,
                 'short': SHORT_CALL_THREADS})
    return needed


def get_client(conf, target, version_cap=None):
    return messaging.get_rpc_client(
        get_transport(conf), target, version_cap=version_cap,
        serializer=RequestContextSerializer())
