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

"""Whether Ceph can make root disks now: the monitors' view (the pool,
an OSD up), an OSD's answer on imaged's connection, and clones of format 2.
"""

import json
from typing import Any

from imaged import exception
from imaged.i18n import _

# Minimum client releases that do not understand RBD clone format 2.
_BEFORE_CLONE_V2 = ('argonaut', 'bobtail', 'cuttlefish', 'dumpling',
                    'emperor', 'firefly', 'giant', 'hammer', 'infernalis',
                    'jewel', 'kraken', 'luminous')


class ClusterStatus:
    """What Ceph says of itself, asked on connection ``conn``."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def status(self) -> tuple[str | None, list[str]]:
        """``(fsid or None, problems)``: can root disks be made now?

        The monitors are asked whether an OSD is up, and then an OSD is
        asked for a small object: a paused or partitioned OSD still counts
        as up for the monitors until it is reported down.
        """
        conn = self.conn
        try:
            fsid = conn.fsid()
            lease = conn.acquire_unproven()
        except exception.BackendUnavailable as e:
            return None, [str(e)]
        error = None
        try:
            problem = self._cluster_problem(lease.cluster)
            if problem is None:
                error = conn.probe(lease)
                if error is not None:
                    problem = _('Ceph OSDs do not answer within %(t)ss: '
                                '%(err)s') % {
                        't': conn.conf.rbd.connect_timeout, 'err': error}
                    error = exception.BackendUnavailable(
                        backend='Ceph', reason=problem)
        except exception.BackendUnavailable as e:
            error = e
            return None, [str(e)]
        finally:
            conn.release(lease, error)
        return fsid, [problem] if problem else []

    def min_compat_client(self) -> str:
        """The cluster's ``require_min_compat_client`` (``osd dump``),
        e.g. ``'mimic'``.

        :raises BackendUnavailable: the monitors do not answer or refuse.
        """
        conn = self.conn
        with conn.lease() as cluster:
            try:
                ret, out, err = cluster.mon_command(
                    json.dumps({'prefix': 'osd dump', 'format': 'json'}),
                    b'', timeout=conn.conf.rbd.connect_timeout)
            except conn.rados.Error as e:
                raise exception.BackendUnavailable(
                    backend='Ceph', reason=_('monitors do not answer: %s') % e)
        if ret != 0:
            raise exception.BackendUnavailable(
                backend='Ceph', reason=_('monitors refused "osd dump": %s')
                % err)
        return json.loads(out).get('require_min_compat_client', '')

    def _cluster_problem(self, cluster):
        """What the monitors say stops I/O in the pool, or None."""
        conn = self.conn
        try:
            if not cluster.pool_exists(conn.pool):
                return _('Ceph pool %s does not exist') % conn.pool
            ret, out, err = cluster.mon_command(
                json.dumps({'prefix': 'osd stat', 'format': 'json'}),
                b'', timeout=conn.conf.rbd.connect_timeout)
        except conn.rados.Error as e:
            raise exception.BackendUnavailable(
                backend='Ceph', reason=_('monitors do not answer: %s') % e)
        if ret != 0:
            return _('Ceph monitors refused "osd stat": %s') % err
        stat = json.loads(out)
        up = stat.get('num_up_osds', stat.get('osdmap', {}).get('num_up_osds'))
        if not up:
            return _('Ceph has no OSD up')
        return self._clone_format_problem(cluster)

    def _clone_format_problem(self, cluster):
        """Why the cluster cannot take clones of format 2, or None."""
        conn = self.conn
        try:
            ret, out, _err = cluster.mon_command(
                json.dumps({'prefix': 'osd dump', 'format': 'json'}),
                b'', timeout=conn.conf.rbd.connect_timeout)
            compat = json.loads(out).get('require_min_compat_client') \
                if ret == 0 else None
        except (conn.rados.Error, ValueError) as e:
            raise exception.BackendUnavailable(
                backend='Ceph', reason=_('monitors do not answer: %s') % e)
        if compat not in _BEFORE_CLONE_V2:
            return None
        return _('Ceph cannot make clones of format 2: '
                 'require_min_compat_client is %s; imaged needs mimic or '
                 'later ("ceph osd set-require-min-compat-client mimic"), '
                 'or images with root disks cannot be deleted in Glance '
                 'and base images wait for their last clone') % compat
