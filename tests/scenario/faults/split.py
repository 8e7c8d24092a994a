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

"""Splits fault test ids by what their class disturbs.

``python -m tests.scenario.faults.split SHARED EXCLUSIVE < ids`` writes the
ids (one a line, as ``stestr list`` prints them) of the tests whose class
says ``exclusive = False`` to the file SHARED, and every other one to
EXCLUSIVE: a test that does not say it disturbs nothing shared is taken to
(tools/scenario-run.sh runs the first kind beside the scenarios, the
second one at a time after them). A test id that cannot be resolved to a
class is an error, not a guess.
"""

import importlib
import sys


def test_class(test_id):
    module_name, class_name, _method = test_id.rsplit('.', 2)
    return getattr(importlib.import_module(module_name), class_name)


def split(test_ids):
    shared, exclusive = [], []
    for test_id in test_ids:
        if getattr(test_class(test_id), 'exclusive', True) is False:
            shared.append(test_id)
        else:
            exclusive.append(test_id)
    return shared, exclusive


def main(argv):
    if len(argv) != 3:
        sys.exit('usage: python -m tests.scenario.faults.split SHARED '
                 'EXCLUSIVE < test-ids')
    test_ids = [line.strip() for line in sys.stdin if line.strip()]
    for path, ids in zip(argv[1:], split(test_ids)):
        with open(path, 'w') as f:
            f.writelines('%s\n' % test_id for test_id in ids)


if __name__ == '__main__':
    main(sys.argv)
