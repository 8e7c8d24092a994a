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

"""``imaged-status upgrade check``: is this host ready for imaged?

Checks, with oslo.upgradecheck's results and exit codes (0 success, 1
warning, 2 failure; ``--json`` for a machine):

* Glance answers and offers API 2.17 (the locations API imaged reads when
  Glance hides image locations, its secure default);
* imaged's Keystone user has the ``service`` role (and whether ``admin``);
* the Ceph cluster can make format-2 clones: ``require_min_compat_client``
  mimic or later allows clone v2; jewel or luminous is a warning (imaged
  protects the snapshots it clones from, so clone v1 works);
* the cache directory is writable, on a file system with room for
  ``[image_cache] max_size_gb``;
* ``[upgrade_levels] imaged`` is not above the RPC API this code serves;
* calls without a token do not act as imaged's user (``[callers]
  tokenless_calls_act_as_imaged`` is a warning);
* root disks that record no project (made before imaged recorded owners;
  a warning naming them: only admin or service tokens may act on them
  until one adopts each).
"""

import os
import sys
import tempfile

from oslo_upgradecheck import upgradecheck
from oslo_utils import units

from imaged import conf as imaged_conf
from imaged import exception
from imaged.image import glance
from imaged import rpcapi
from imaged.storage import rbd as rbd_storage

CONF = imaged_conf.CONF
Code = upgradecheck.Code
Result = upgradecheck.Result

LOCATIONS_API = (2, 17)
# Ceph releases in order. Clones of format-2 images from protected
# snapshots (clone v1, what imaged makes) work with any of them; clone v2
# (no protection needed, what newer Glance and Nova may rely on) needs mimic.
CEPH_RELEASES = ('jewel', 'kraken', 'luminous', 'mimic', 'nautilus',
                 'octopus', 'pacific', 'quincy', 'reef', 'squid', 'tentacle')


def _version(text):
    try:
        return tuple(int(part) for part in text.split('.'))
    except ValueError:
        return ()


class Checks(upgradecheck.UpgradeCommands):
    """The checks, each talking to its backend through imaged's own
    modules (fakes in unit tests)."""

    def __init__(self, conf=CONF, glance_api=None, ceph=None, disks=None):
        self.conf = conf
        self._glance = glance_api
        self._ceph = ceph
        self._disks = disks

    @property
    def glance(self):
        if self._glance is None:
            self._glance = glance.GlanceAPI(self.conf)
        return self._glance

    @property
    def ceph(self):
        if self._ceph is None:
            self._ceph = self._driver().cluster_status
        return self._ceph

    @property
    def disks(self):
        if self._disks is None:
            self._disks = self._driver().disks
        return self._disks

    def _driver(self):
        if getattr(self, '_rbd_driver', None) is None:
            self._rbd_driver = rbd_storage.RBDDriver(self.conf,
                                                     self.conf.host)
        return self._rbd_driver

    def _check_glance(self):
        try:
            versions = self.glance.api_versions()
        except exception.ImagedException as e:
            return Result(Code.FAILURE, str(e))
        newest = max((_version(v) for v in versions), default=())
        if newest >= LOCATIONS_API:
            return Result(Code.SUCCESS, 'Glance offers API %s' %
                          '.'.join(map(str, newest)))
        return Result(Code.WARNING, (
            'Glance offers API %s at most, not 2.17: imaged cannot read '
            'image locations when Glance hides them (show_multiple_locations '
            'False, its default), and downloads every image instead of '
            'cloning it.') % ('.'.join(map(str, newest)) or 'none'))

    def _check_keystone_roles(self):
        try:
            roles = self.glance.user_roles()
        except exception.ImagedException as e:
            return Result(Code.FAILURE, str(e))
        if roles is None:
            return Result(Code.SUCCESS, '[glance] uses no Keystone '
                          'credentials: nothing to check')
        if 'service' not in roles and 'admin' not in roles:
            return Result(Code.FAILURE, (
                "imaged's Keystone user has roles %s: it needs 'service' for "
                "Glance's locations API and copy-image.") % ', '.join(roles))
        if 'admin' not in roles:
            return Result(Code.WARNING, (
                "imaged's Keystone user has 'service' but not 'admin': "
                "callers' images are read with their token plus imaged's "
                "service token (clones, downloads and copy-image work when "
                "Glance's policy allows service_roles:service); imaged's "
                "own token alone does not see other projects' private "
                "images, so the deleted-image purge keeps their bases."))
        return Result(Code.SUCCESS, 'roles: %s' % ', '.join(roles))

    def _check_ceph_clones(self):
        try:
            release = self.ceph.min_compat_client()
        except exception.ImagedException as e:
            return Result(Code.FAILURE, str(e))
        if release not in CEPH_RELEASES:
            return Result(Code.FAILURE, (
                'require_min_compat_client is %r, not a Ceph release imaged '
                'knows (jewel or later)') % release)
        if CEPH_RELEASES.index(release) >= CEPH_RELEASES.index('mimic'):
            return Result(Code.SUCCESS, 'require_min_compat_client is %s: '
                          'clone v2 available' % release)
        return Result(Code.WARNING, (
            'require_min_compat_client is %s: imaged clones from the '
            'snapshots it protects (clone v1), which works; clone v2 needs '
            'mimic or later (ceph osd set-require-min-compat-client mimic, '
            'once every client is mimic or newer)') % release)

    def _check_cache_dir(self):
        base_dir = self.conf.image_cache.base_dir
        try:
            os.makedirs(base_dir, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=base_dir,
                                             prefix='.imaged-status-'):
                pass
            fs = os.statvfs(base_dir)
        except OSError as e:
            return Result(Code.FAILURE, 'cache directory %s is not writable: '
                          '%s' % (base_dir, e))
        free = fs.f_bavail * fs.f_frsize
        wanted = self.conf.image_cache.max_size_gb * units.Gi
        used = sum(entry.stat().st_size for entry in os.scandir(base_dir)
                   if entry.is_file(follow_symlinks=False))
        detail = '%s: %.1f GiB free, %.1f GiB in the cache, max_size_gb %s' % (
            base_dir, free / units.Gi, used / units.Gi,
            self.conf.image_cache.max_size_gb)
        if wanted and free + used < wanted:
            return Result(Code.WARNING, detail + ': the file system cannot '
                          'hold the cache size allowed')
        if not wanted and free < units.Gi:
            return Result(Code.WARNING, detail + ': less than 1 GiB free')
        return Result(Code.SUCCESS, detail)

    def _check_rpc_cap(self):
        cap = self.conf.upgrade_levels.imaged
        if not cap:
            return Result(Code.SUCCESS, 'no cap: RPC API %s' %
                          rpcapi.RPC_API_VERSION)
        if not _version(cap):
            return Result(Code.FAILURE, '[upgrade_levels] imaged = %r is not '
                          'a version' % cap)
        if _version(cap) > _version(rpcapi.RPC_API_VERSION):
            return Result(Code.FAILURE, (
                '[upgrade_levels] imaged = %s is above the RPC API this '
                'imaged serves (%s): agents of this version would refuse '
                'its calls') % (cap, rpcapi.RPC_API_VERSION))
        return Result(Code.SUCCESS, 'cap %s, server %s' % (
            cap, rpcapi.RPC_API_VERSION))

    def _check_tokenless_calls(self):
        if not self.conf.callers.tokenless_calls_act_as_imaged:
            return Result(Code.SUCCESS, 'calls without a token are '
                          'anonymous: public and community images only')
        return Result(Code.WARNING, (
            '[callers] tokenless_calls_act_as_imaged is on: anyone who can '
            'send to imaged\'s topic acts with imaged\'s Keystone user, '
            'on every project\'s images and disks. Have callers send '
            'tokens (a conductor its own service user\'s) and turn it '
            'off.'))

    def _check_disk_owners(self):
        try:
            unowned = self.disks.unowned()
        except exception.ImagedException as e:
            return Result(Code.FAILURE, str(e))
        if not unowned:
            return Result(Code.SUCCESS, 'every root disk in %s records its '
                          'project' % self.conf.rbd.pool)
        shown = ', '.join(unowned[:20]) + (
            ' and %d more' % (len(unowned) - 20) if len(unowned) > 20 else '')
        return Result(Code.WARNING, (
            '%d root disks in %s record no project (made before imaged '
            'recorded owners): only admin or service tokens may act on '
            'them, the first of which adopts each for its project: %s') % (
            len(unowned), self.conf.rbd.pool, shown))

    _upgrade_checks = (
        ('Glance API', _check_glance),
        ('Keystone roles', _check_keystone_roles),
        ('Ceph clones', _check_ceph_clones),
        ('Cache directory', _check_cache_dir),
        ('RPC version cap', _check_rpc_cap),
        ('Tokenless calls', _check_tokenless_calls),
        ('Root disk owners', _check_disk_owners),
    )


def main(argv=None):
    return upgradecheck.main(
        CONF, project='imaged', upgrade_command=Checks(),
        argv=sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    sys.exit(main())
