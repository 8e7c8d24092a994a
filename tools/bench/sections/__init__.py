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

"""The figure sections, one module each, numbered as in the table:
``rpc`` (6), ``clone`` (1), ``download`` (2), ``sparse`` (3), ``qcow2`` (4),
``dedup`` (5) and ``memory`` (7).

Each has ``measure(bench)``, which adds its figures to a
``tools.bench.harness.Bench``.
"""


def alternate(rep, *runs):
    """Call ``runs`` in turn, in reverse order on odd repetitions."""
    for run in (runs if rep % 2 == 0 else runs[::-1]):
        run()
