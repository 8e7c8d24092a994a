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

"""imaged-status upgrade check: each check's results, with fakes."""

import io
import json
import os
from unittest import mock

from oslo_upgradecheck import upgradecheck

from imaged.cmd import status
from imaged import exception
from tests import base

Code = upgradecheck.Code


class FakeGlance:

    def __init__(self, versions=('2.17', '2.16'), roles=('admin', 'service'),
                 error=None):
        self.versions = list(versions)
        self.roles = None if roles is None else sorted(roles)
        self.error = error

    def api_versions(self):
        if self.error:
            raise self.error
        return self.versions

    def user_roles(self):
        if self.error:
            raise self.error
        return self.roles


class FakeDisks:

    def __init__(self, unowned=(), error=None):
        self.names = sorted(unowned)
        self.error = error

    def unowned(self):
        if self.error:
            raise self.error
        return self.names


class FakeCeph:

    def __init__(self, release='mimic', error=None):
        self.release = release
        self.error = error

    def min_compat_client(self):
        if self.error:
            raise self.error
        return self.release


UNREACHABLE = exception.BackendUnavailable(backend='Glance',
                                           reason='refused')


class ChecksTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(base_dir=os.path.join(self.tempdir, '_base'),
                   group='image_cache')

    def checks(self, **kwargs):
        kwargs.setdefault('glance_api', FakeGlance())
        kwargs.setdefault('ceph', FakeCeph())
        kwargs.setdefault('disks', FakeDisks())
        return status.Checks(self.conf, **kwargs)

    def test_glance_with_the_locations_api(self):
        self.assertEqual(Code.SUCCESS, self.checks()._check_glance().code)

    def test_glance_without_the_locations_api_warns(self):
        result = self.checks(glance_api=FakeGlance(
            versions=['2.16', '2.9']))._check_glance()
        self.assertEqual(Code.WARNING, result.code)
        self.assertIn('2.16', result.details)

    def test_glance_unreachable_fails(self):
        result = self.checks(glance_api=FakeGlance(
            error=UNREACHABLE))._check_glance()
        self.assertEqual(Code.FAILURE, result.code)
        self.assertIn('refused', result.details)

    def test_roles(self):
        def code(roles):
            return self.checks(glance_api=FakeGlance(
                roles=roles))._check_keystone_roles()
        self.assertEqual(Code.SUCCESS, code(['admin', 'service']).code)
        self.assertEqual(Code.SUCCESS, code(None).code)  # no Keystone
        without_admin = code(['service'])
        self.assertEqual(Code.WARNING, without_admin.code)
        self.assertIn('service token', without_admin.details)
        self.assertEqual(Code.FAILURE, code(['member']).code)

    def test_ceph_clone_v2_needs_mimic(self):
        for release, expected in (('mimic', Code.SUCCESS),
                                  ('reef', Code.SUCCESS),
                                  ('luminous', Code.WARNING),
                                  ('jewel', Code.WARNING),
                                  ('firefly', Code.FAILURE),
                                  ('', Code.FAILURE)):
            self.assertEqual(expected, self.checks(ceph=FakeCeph(
                release))._check_ceph_clones().code, release)
        self.assertEqual(Code.FAILURE, self.checks(ceph=FakeCeph(
            error=exception.BackendUnavailable(
                backend='Ceph', reason='x')))._check_ceph_clones().code)

    def test_cache_dir_writable_with_room(self):
        result = self.checks()._check_cache_dir()
        self.assertEqual(Code.SUCCESS, result.code)
        self.assertEqual([], os.listdir(self.conf.image_cache.base_dir))

    def test_cache_larger_than_the_file_system_warns(self):
        self.flags(max_size_gb=10 ** 9, group='image_cache')
        result = self.checks()._check_cache_dir()
        self.assertEqual(Code.WARNING, result.code)
        self.assertIn('cannot hold', result.details)

    def test_cache_dir_not_writable_fails(self):
        blocker = os.path.join(self.tempdir, 'file')
        open(blocker, 'w').close()
        self.flags(base_dir=os.path.join(blocker, '_base'),
                   group='image_cache')
        self.assertEqual(Code.FAILURE,
                         self.checks()._check_cache_dir().code)

    def test_tokenless_calls_acting_as_imaged_are_a_warning(self):
        self.assertEqual(Code.SUCCESS,
                         self.checks()._check_tokenless_calls().code)
        self.flags(tokenless_calls_act_as_imaged=True, group='callers')
        result = self.checks()._check_tokenless_calls()
        self.assertEqual(Code.WARNING, result.code)
        self.assertIn('tokenless_calls_act_as_imaged is on', result.details)

    def test_disks_without_an_owner_are_a_warning_naming_them(self):
        self.assertEqual(Code.SUCCESS,
                         self.checks()._check_disk_owners().code)
        result = self.checks(disks=FakeDisks(
            ['a_disk', 'b_disk']))._check_disk_owners()
        self.assertEqual(Code.WARNING, result.code)
        self.assertIn('2 root disks in vms record no project', result.details)
        self.assertIn('a_disk, b_disk', result.details)
        many = ['%02d_disk' % n for n in range(25)]
        result = self.checks(disks=FakeDisks(many))._check_disk_owners()
        self.assertIn('19_disk and 5 more', result.details)
        self.assertNotIn('20_disk', result.details)
        down = exception.BackendUnavailable(backend='Ceph', reason='down')
        self.assertEqual(Code.FAILURE, self.checks(
            disks=FakeDisks(error=down))._check_disk_owners().code)

    def test_rpc_cap(self):
        def code(cap):
            self.flags(imaged=cap, group='upgrade_levels')
            return self.checks()._check_rpc_cap().code
        self.assertEqual(Code.SUCCESS, code(None))
        self.assertEqual(Code.SUCCESS, code('1.0'))
        self.assertEqual(Code.SUCCESS, code('1.1'))
        self.assertEqual(Code.SUCCESS, code('1.2'))
        self.assertEqual(Code.SUCCESS, code('1.3'))
        self.assertEqual(Code.FAILURE, code('1.4'))
        self.assertEqual(Code.FAILURE, code('2.0'))
        self.assertEqual(Code.FAILURE, code('latest'))

    def test_the_worst_result_is_the_exit_code_and_json_lists_all(self):
        checks = self.checks(glance_api=FakeGlance(error=UNREACHABLE))
        conf = mock.Mock()
        conf.command.json = True
        out = io.StringIO()
        with mock.patch.object(upgradecheck, 'CONF', conf), \
                mock.patch('sys.stdout', out):
            self.assertEqual(Code.FAILURE, checks.check())
        report = json.loads(out.getvalue())
        self.assertEqual(
            ['Glance API', 'Keystone roles', 'Ceph clones',
             'Cache directory', 'RPC version cap', 'Tokenless calls',
             'Root disk owners'],
            [c['check'] for c in report['checks']])
        self.assertEqual(Code.FAILURE, report['checks'][0]['result'])
