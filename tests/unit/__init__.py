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

"""Unit tests. Every error a call answers through the manager here must be
one its contract (``imaged.rpcapi.METHODS``) names: the unit tests drive
the calls through injected failures and hostile input, so an error the
contract misses fails the test that provoked it."""

from imaged import manager

LOGGING_UNDECLARED = manager.undeclared


def _undeclared(method, error):
    raise AssertionError(
        '%s answered %s, which imaged.rpcapi.METHODS does not name for it'
        % (method, type(error).__name__))


manager.undeclared = _undeclared
