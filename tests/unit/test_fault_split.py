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

"""tests/scenario/faults/split.py: which fault tests run beside the
scenarios (tools/scenario-run.sh)."""

import io
import os
import sys
import types

import fixtures

from tests import base
from tests.scenario.faults import split

MODULE = 'imaged_unit_fake_faults'


class SplitTest(base.TestCase):

    def setUp(self):
        super().setUp()
        module = types.ModuleType(MODULE)

        class Exclusive:
            exclusive = True

        class Shared:
            exclusive = False

        class Unsaid:  # e.g. a testtools.TestCase of its own
            pass

        class Truthy:  # only False itself says "shared"
            exclusive = 0

        for cls in (Exclusive, Shared, Unsaid, Truthy):
            setattr(module, cls.__name__, cls)
        self.useFixture(fixtures.MonkeyPatch(
            'sys.modules', dict(sys.modules, **{MODULE: module})))

    def test_only_classes_that_say_exclusive_false_are_shared(self):
        ids = ['%s.%s.test_x' % (MODULE, name)
               for name in ('Exclusive', 'Shared', 'Unsaid', 'Truthy')]
        ids.append('%s.Shared.test_y' % MODULE)
        shared, exclusive = split.split(ids)
        self.assertEqual(['%s.Shared.test_x' % MODULE,
                          '%s.Shared.test_y' % MODULE], shared)
        self.assertEqual(['%s.%s.test_x' % (MODULE, name)
                          for name in ('Exclusive', 'Unsaid', 'Truthy')],
                         exclusive)

    def test_an_unknown_class_is_an_error(self):
        self.assertRaises(AttributeError, split.split,
                          ['%s.Missing.test_x' % MODULE])
        self.assertRaises(ImportError, split.split,
                          ['imaged_unit_no_such_module.Test.test_x'])

    def test_main_writes_both_files(self):
        tmp = self.useFixture(fixtures.TempDir()).path
        shared, exclusive = (os.path.join(tmp, n) for n in ('s', 'e'))
        self.useFixture(fixtures.MonkeyPatch('sys.stdin', io.StringIO(
            '%s.Shared.test_x\n\n%s.Exclusive.test_x\n' % (MODULE, MODULE))))
        split.main(['split', shared, exclusive])
        with open(shared) as f:
            self.assertEqual('%s.Shared.test_x\n' % MODULE, f.read())
        with open(exclusive) as f:
            self.assertEqual('%s.Exclusive.test_x\n' % MODULE, f.read())
