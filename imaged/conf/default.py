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

"""Options of the [DEFAULT] group."""

import socket

from oslo_config import cfg

default_opts = [
    cfg.StrOpt(
        'host',
        default=socket.gethostname(),
        sample_default='<current_hostname>',
        help="""
Name of this image agent on the message bus.

Callers address this agent with ``prepare(server=host)``; it must match the
name the scheduler or conductor knows this compute host by.

Possible values:

* Any string without dots or spaces is safest (it becomes part of a queue
  name).
"""),
    cfg.StrOpt(
        'state_path',
        default='/var/lib/imaged',
        help="""
Top-level directory for imaged's state (base image cache, lock files).

Related options:

* ``[image_cache] base_dir`` and ``[oslo_concurrency] lock_path`` default to
  directories below it.
"""),
    cfg.IntOpt(
        'long_rpc_timeout',
        default=1800,
        min=1,
        help="""
Overall timeout, in seconds, of long RPC calls such as ``create_root_disk``.

A download of a large image can take many minutes; the caller also watches
the server's heartbeats (``rpc_response_timeout``), so a dead agent is still
noticed quickly.

On the caller's side (``imaged.rpcapi``), how long it waits; it sends that
time with each call. On the agent's side, how long a caller that says
nothing (an older client, a raw oslo.messaging client) is taken to wait:
a long call still queued or working past that time gives up and answers
``Timeout``.

Related options:

* ``rpc_response_timeout`` (oslo.messaging): the heartbeat interval check.
* ``max_concurrent_long_calls``, ``max_queued_long_calls``.
"""),
    cfg.IntOpt(
        'rpc_retries',
        default=2,
        min=0,
        help="""
Times ``imaged.rpcapi`` calls an agent again when its worker died during a
long call (create, delete, flatten, snapshot, cache).

Those calls are idempotent: called again with the same arguments, the work
is finished or found done (``existing``). A caller notices a dead worker
when its heartbeats stop for ``rpc_response_timeout`` seconds (a live
worker sends one every half of that), not after ``long_rpc_timeout``; the
agent's parent starts a new worker, which takes the call again. Short calls
send no heartbeats and are never called again.

Possible values:

* 0: a dead worker's calls fail with ``MessagingTimeout``.

Related options:

* ``rpc_response_timeout`` (oslo.messaging): how long a caller waits for a
  heartbeat.
* ``long_rpc_timeout``: each attempt's whole bound; every attempt has a
  fresh one.
"""),
    cfg.IntOpt(
        'max_concurrent_long_calls',
        default=32,
        min=1,
        help="""
Most long RPC calls (``create_root_disk``, ``cache_images``) this agent
works on at once.

Further long calls wait in a queue, in the order they came, until one
finishes or until their caller would stop waiting (they then answer
``Timeout`` without having started). Short calls (``get_capabilities``,
``list_cached_images``, ``delete_root_disk``) never wait here, so they are
answered while long calls wait for locks and downloads.

Related options:

* ``max_queued_long_calls``: the length of the queue.
* ``executor_thread_pool_size`` (oslo.messaging): defaults to this plus
  ``max_queued_long_calls`` plus 16 threads kept for short calls, and is
  raised to that if set lower.
* ``[image_cache] max_concurrent_downloads`` bounds the downloads among
  them.
"""),
    cfg.IntOpt(
        'max_queued_long_calls',
        default=256,
        min=0,
        help="""
Most long RPC calls that wait for one of the ``max_concurrent_long_calls``
places.

A long call beyond it is refused at once with ``AgentBusy`` naming this host,
so that its caller can choose another host or try again later; a waiting
call holds one oslo.messaging executor thread.

Possible values:

* 0: a long call is refused whenever ``max_concurrent_long_calls`` are
  running.

Related options:

* ``max_concurrent_long_calls``, ``executor_thread_pool_size``.
"""),
    cfg.IntOpt(
        'max_root_disk_gb',
        default=16384,
        min=1,
        mutable=True,
        help="""
Largest root disk, in GiB, that ``create_root_disk`` accepts.

Requests above it are refused with ``InvalidInput`` before any work is done.
"""),
]


def register_opts(conf):
    conf.register_opts(default_opts)


def list_opts():
    return {'DEFAULT': default_opts}
