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

Related options:

* ``rpc_response_timeout`` (oslo.messaging): the heartbeat interval check.
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
