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

"""Options of the [rbd] group: where and how root disks live in Ceph."""

from oslo_config import cfg

rbd_group = cfg.OptGroup(
    'rbd',
    title='Ceph RBD options',
    help='Where root disks are created, and how imaged talks to Ceph.')

rbd_opts = [
    cfg.StrOpt(
        'ceph_conf',
        default='/etc/ceph/ceph.conf',
        help='Path to the ceph.conf that names the cluster (monitors, '
             'keyring location).'),
    cfg.StrOpt(
        'user',
        default=None,
        help="""
Ceph (cephx) user imaged connects as, without the ``client.`` prefix.

It needs ``profile rbd`` on ``[rbd] pool``, and on Glance's pool to write
snapshots there (``snapshot_root_disk``, strategy ``clone``) and to remove a
deleted image's trash entry with its last clone; ``profile rbd-read-only``
there is enough to clone from Glance's snapshots. Unset means librados'
default user (``client.admin``).
"""),
    cfg.StrOpt(
        'keyring',
        default=None,
        help='Keyring of ``[rbd] user``. Unset means the keyring named in '
             '``ceph_conf``.'),
    cfg.StrOpt(
        'pool',
        default='vms',
        help='RBD pool in which root disks ``<instance_uuid>_disk`` are '
             'created.'),
    cfg.IntOpt(
        'connect_timeout',
        default=10,
        min=1,
        help="""
Seconds to wait when connecting to the Ceph cluster.

Also bounds each monitor and OSD operation, so an unreachable cluster gives
``BackendUnavailable`` in bounded time instead of a hung call.
"""),
    cfg.IntOpt(
        'import_concurrency',
        default=4,
        min=1,
        max=64,
        help='Number of 4 MiB writes kept in flight while importing a base '
             'image into Ceph. librbd keeps a copy of each write in flight: '
             'every one adds 4 MiB to the worker\'s memory.'),
    cfg.IntOpt(
        'delete_busy_timeout',
        default=30,
        min=0,
        help='Seconds ``delete_root_disk`` keeps retrying while the disk is '
             'still open (watched) by a client, before giving up.'),
    cfg.IntOpt(
        'base_lock_timeout',
        default=60,
        min=1,
        help="""
Seconds to wait for the Ceph-side lock on a base image (held by any host of
the pool while it checks, repairs, clones or removes that base) before the
call fails with ``Timeout``.
"""),
    cfg.IntOpt(
        'base_lock_duration',
        default=60,
        min=5,
        help="""
Lease, in seconds, of the Ceph-side lock on a base image: the lock of a host
that died holding it expires after this long. Also the youngest age at which
the cleanup task removes an unused base image.
"""),
    cfg.IntOpt(
        'concurrent_flatten_operations',
        default=1,
        min=1,
        help="""
Flattens (``flatten_root_disk``, ``[rbd] flatten_root_disks``,
``max_clone_depth``, snapshots with strategy ``clone``) that run at once in
this agent. A flatten reads and writes a disk's whole allocated data; the
others wait their turn within their call's deadline.

Related options:

* ``flatten_root_disks``, ``max_clone_depth``
"""),
    cfg.StrOpt(
        'flatten_root_disks',
        default='never',
        choices=[('never', 'root disks stay clones of their image'),
                 ('on_create', 'create_root_disk flattens a cloned disk '
                               'before it answers'),
                 ('background', 'create_root_disk answers with the clone '
                                'and flattens it afterwards')],
        help="""
Whether root disks made by cloning are flattened, so that they no longer
depend on their image (Glance's snapshot or imaged's base image).

With ``never`` (the default) a disk stays a copy-on-write clone: fast to
make and small, and with clones of format 2 its image can still be deleted
(it goes to the RBD trash). ``on_create`` costs a copy of the image's data
in the call; ``background`` answers at once and queues the disk for one of
``concurrent_flatten_operations`` workers, which flattens it with the disk's
lock held (a ``delete_root_disk`` meanwhile cancels it and goes on).

Related options:

* ``concurrent_flatten_operations``, ``max_clone_depth``,
  ``background_flatten_queue``
"""),
    cfg.IntOpt(
        'background_flatten_queue',
        default=256,
        min=1,
        mutable=True,
        help="""
Disks waiting for a background flatten (``flatten_root_disks =
background``) at most. A new clone that finds the queue full stays a clone
(a good disk; a later ``flatten_root_disk`` flattens it) and the agent logs
a warning; the depth is in ``get_capabilities`` and the metrics.

Related options:

* ``flatten_root_disks``, ``concurrent_flatten_operations``
"""),
    cfg.StrOpt(
        'snapshot_strategy',
        default='auto',
        choices=[('auto', 'clone when Glance has an RBD store in this '
                          'cluster, else upload'),
                 ('upload', 'always upload the bytes to Glance')],
        help="""
How ``snapshot_root_disk`` gives a disk's bytes to Glance.

``auto``: when Glance has an RBD store in this agent's cluster, the disk is
copied inside Ceph into Glance's pool (clone, flatten, protected snapshot
``snap``) and registered with Glance's ``POST /v2/images/{id}/locations``
(Glance 2024.2 or later; imaged's Ceph user needs ``profile rbd`` on
Glance's pool); otherwise uploaded. ``upload``: always ``PUT
/v2/images/{id}/file`` (e.g. when imaged may not write into Glance's pool).
"""),
    cfg.IntOpt(
        'max_clone_depth',
        default=5,
        min=1,
        help="""
Longest chain of clones a new root disk may read through. A disk cloned
from an image that is itself a clone (a snapshot of a clone, a base of a
clone) is flattened when its chain would be longer than this, whatever
``flatten_root_disks`` says. Long chains slow every read that misses.
"""),
]


def register_opts(conf):
    conf.register_group(rbd_group)
    conf.register_opts(rbd_opts, group=rbd_group)


def list_opts():
    return {rbd_group: rbd_opts}
