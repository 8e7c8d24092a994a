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

"""Leftovers: what a killed, failed or cut-off call leaves behind, and the
one schedule that removes it.

A call cleans up after itself when it can (a sink's ``abort``, a retry
that takes up its own earlier attempt). What outlives the call is a
*leftover*, and this module is its one owner: :data:`KINDS` lists every
kind, where it lives, and who may remove it when. Two rules:

* **this host's own** leftovers go at once: at start-up (nothing of this
  host is running yet) and then at every tick those it knows it left (a
  removal that failed), never what a call of this process is making now;
* **another host's** go only on the pool's cleanup host (``[image_cache]
  pool_cleanup``, one host of the pool at a time), once that host can no
  longer be making them: when the Ceph lock the making call held can be
  taken (its lease ran out: judged in Ceph, not by comparing clocks), or,
  where no lock names the leftover, once older than its bound.

The schedule: :meth:`Leftovers.tick` runs every ``OWN_SWEEP_INTERVAL``
seconds (at most; the service's one timer), and every ``[image_cache]
manager_interval`` seconds also the image cache's eviction
(:mod:`imaged.imagecache.eviction`, which is policy, not leftovers) and
the pool-wide sweeps.
"""

import collections
import time
from typing import Any

from oslo_log import log as logging

from imaged import exception

LOG = logging.getLogger(__name__)

# Seconds between two sweeps of this host's own leftovers (the first one
# at start-up): cheap, they only retry what this process knows it left.
OWN_SWEEP_INTERVAL = 30

# Another host's partial image that names no lock of its writer (an older
# imaged's) and is older than this (or than [glance] download_timeout) and
# open nowhere was abandoned by a host that died.
ABANDONED_PARTIAL_AGE = 3600

# Who may sweep a kind.
OWN_AT_ONCE = 'this host, at once'
POOL_ROLE = 'the pool cleanup host'

Kind = collections.namedtuple('Kind', [
    'name',     # what it is called in logs and docs
    'where',    # where it lives
    'own',      # when this host removes its own
    'others',   # when the pool's cleanup host removes another host's
])

KINDS = (
    Kind('scratch file',
         '<[image_cache] base_dir>/.tmp (downloads, conversions)',
         'every one at start-up; later, any unchanged for twice '
         '[DEFAULT] long_rpc_timeout (no call lasts that long)',
         'never (local to its host)'),
    Kind('pool partial',
         '[rbd] pool: <name>.<host tag>-<token>-<time>.imaged-part '
         '(a base or an imported disk being written)',
         'at start-up, then each removal that failed, at once',
         'once the locks its writer held (named in its metadata) can be '
         'taken (the lease ran out); one naming none (an older imaged\'s) '
         'once older than max([glance] download_timeout, 3600 s); never '
         'while open'),
    Kind('marked disk',
         '[rbd] pool: a clone whose xattr on imaged.disks.creating says '
         'it is being made',
         'at start-up, then each removal that failed, at once (with the '
         "disk's lock)",
         "once the disk's lock can be taken (the maker's lease ran out)"),
    Kind('trashed base',
         "[rbd] pool's RBD trash: a base removed while clones lived on",
         '(pool-wide only)',
         'once its last clone is gone'),
    Kind('snapshot partial',
         "Glance's RBD pools: <image id>.<host tag>-<token>-<time>"
         '.imaged-part (a snapshot copy being flattened)',
         'at start-up, then each removal that failed, at once (a retry of '
         'the same snapshot takes up its own at once too)',
         'once the locks its writer held (named in its metadata) can be '
         'taken (the lease ran out); one naming none (an older imaged\'s) '
         'once older than max([glance] download_timeout, 3600 s); never '
         'while open'),
    Kind('verification record',
         '[rbd] pool: imaged.verified.<image id>, listed in the omap of '
         'imaged.verified (what a signed image\'s snapshot was found to be)',
         '(pool-wide only)',
         'once the snapshot it names is gone (the image deleted in '
         'Glance)'),
    Kind('kept lazy base',
         '[rbd] pool: <image id>_base.<host tag>-<token>-<time>.imaged-part '
         'marked imaged.quarantined (a lazy base never published: a hash '
         'mismatch, or a base another build made first), kept for the '
         'disks cloned from it',
         '(pool-wide only)',
         'once committed and its last clone is gone'),
    Kind('temporary disk snapshot',
         '[rbd] pool: <disk>@imaged-snapshot-<image id>, recorded on '
         'imaged.snapshots.taking',
         "at every tick, with the disk's lock (no snapshot call runs); "
         'delete_root_disk removes them too',
         "once the disk's lock can be taken (the caller's lease ran out)"),
)


def abandoned_age(conf: Any) -> float:
    """Seconds after which another host's partial image is abandoned."""
    return max(conf.glance.download_timeout, ABANDONED_PARTIAL_AGE)


class Leftovers:
    """The sweeps of one host, on one schedule.

    :param storage: the RBD driver (``partials``, ``disks``, ``bases``,
        ``snapshots``, the cleanup role).
    :param files: this host's image cache files (the scratch directory).
    :param glance_pools: ``glance_pools()`` gives Glance's RBD pools in our
        cluster (where snapshot copies are made).
    :param eviction: the image cache's ``Eviction``, run on the same
        schedule every ``manager_interval``.
    """

    def __init__(self, conf, storage, files, glance_pools, eviction,
                 clock=time.monotonic):
        self.conf = conf
        self.storage = storage
        self.files = files
        self.glance_pools = glance_pools
        self.eviction = eviction
        self._clock = clock
        self._next_interval = None  # when the next interval's run is due

    # -- the schedule ---------------------------------------------------------

    def at_start(self) -> list[str]:
        """Before any call runs: every scratch file goes."""
        removed = self.files.remove_scratch()
        if removed:
            LOG.info('Removed %d scratch files left in %s by an earlier '
                     'run', len(removed), self.files.tmp_dir)
        return removed

    def tick(self) -> float:
        """One turn of the schedule; returns the seconds until the next.

        This host's own leftovers every turn; every ``[image_cache]
        manager_interval`` seconds (the first one interval after start-up)
        the cache's eviction and, on the pool's cleanup host, the others'.
        """
        interval = self.conf.image_cache.manager_interval
        now = self._clock()
        if self._next_interval is None:
            self._next_interval = now + interval
        self.sweep_own()
        if now >= self._next_interval:
            self._next_interval = now + interval
            self.run_interval()
        return max(0, min(OWN_SWEEP_INTERVAL,
                          self._next_interval - self._clock()))

    def run_interval(self) -> bool:
        """The cleanup of one ``manager_interval``: eviction, then the
        pool-wide sweeps if this host holds the role."""
        pool_wide = self._guarded('the pool cleanup role',
                                  self._holds_pool_role) or False
        self._guarded('the image cache',
                      lambda: self.eviction.run(pool_wide=pool_wide))
        if pool_wide:
            self.sweep_pool()
        return pool_wide

    def _guarded(self, what, sweep):
        # One kind that cannot be swept now never stops the others.
        try:
            return sweep()
        except exception.ImagedException as e:
            LOG.warning('Cannot clean %s now: %s', what, e)
        except Exception:
            LOG.exception('Cleaning %s failed', what)
        return None

    def _holds_pool_role(self):
        policy = self.conf.image_cache.pool_cleanup
        if policy != 'elect':
            return policy == 'always'
        return self.storage.holds_cleanup_role(
            self.conf.image_cache.manager_interval)

    # -- this host's own ------------------------------------------------------

    def sweep_own(self) -> dict[str, list[str]]:
        """This host's own leftovers of every kind but trashed bases.

        :returns: ``{kind name: [what was removed]}``.
        """
        storage = self.storage
        sweeps = (
            ('scratch file', lambda: self.files.remove_scratch(
                older_than=2 * self.conf.long_rpc_timeout)),
            ('pool partial', lambda: storage.partials.sweep()[0]),
            ('marked disk', storage.incomplete_disks.sweep),
            ('temporary disk snapshot', lambda: self._sweep_snapshots(
                storage.snapshots.left_here())),
            ('snapshot partial', lambda: storage.snapshots.sweep_own(
                self.glance_pools)),
        )
        return {kind: self._guarded("this host's %ss" % kind, sweep) or []
                for kind, sweep in sweeps}

    # -- the pool's -----------------------------------------------------------

    def sweep_pool(self) -> dict[str, list[str]]:
        """Other hosts' leftovers (the cleanup host's share).

        :returns: ``{kind name: [what was removed]}``.
        """
        storage, max_age = self.storage, abandoned_age(self.conf)
        sweeps = (
            ('trashed base', storage.bases.purge_trash),
            ('pool partial',
             lambda: storage.partials.sweep_abandoned(max_age)),
            ('marked disk', storage.incomplete_disks.sweep_abandoned),
            ('snapshot partial', lambda: storage.snapshots.sweep_abandoned(
                self.glance_pools(), max_age)),
            ('verification record', storage.verified.sweep_gone),
            ('kept lazy base', storage.remove_kept_lazy_bases),
            ('temporary disk snapshot', lambda: self._sweep_snapshots(
                [(disk, image_id) for disk, image_id, host
                 in storage.snapshots.taken() if host != storage.host])),
        )
        return {kind: self._guarded('%ss of other hosts' % kind, sweep) or []
                for kind, sweep in sweeps}

    def _sweep_snapshots(self, entries):
        """Remove the temporary snapshots ``[(disk, image id)]``, each with
        its disk's lock (so no snapshot call runs on it)."""
        storage = self.storage
        removed = []
        for disk, image_id in entries:
            try:
                with storage.disk_locks.lock(disk, 0):
                    storage.snapshots.drop(disk, image_id)
            except exception.RootDiskBusy:
                continue  # a call holds the disk: not a leftover now
            removed.append('%s@%s' % (disk, image_id))
        if removed:
            LOG.info('Removed temporary disk snapshots left by snapshot '
                     'calls that did not finish: %s', ', '.join(removed))
        return removed
