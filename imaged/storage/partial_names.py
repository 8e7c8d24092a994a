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

"""The names of partial images: who is making them, since when.

``<name>.<host tag>-<token>-<unix time, hex>.imaged-part``: unique, so that
agents sharing a pool never step on each other's work; tagged with the
host, so that each agent cleans up what it left itself; and timed, for
the partials that name no lock of their writer (see
:mod:`imaged.storage.guards`).
"""

import hashlib
import time
import uuid

PARTIAL_SUFFIX = '.imaged-part'


def host_tag(host: str) -> str:
    """A short, name-safe tag of a host, carried in its partial names."""
    return hashlib.sha256(host.encode('utf-8')).hexdigest()[:8]


def partial_name(name: str, host: str, now: float | None = None) -> str:
    """A unique temporary name for ``name`` being made by ``host``.

    Unique, so that agents sharing a pool never step on each other's work
    (two hosts may make the same image's base at once); tagged with the
    host and the time, so that each agent cleans up what it left itself and
    a dead host's leftovers can go after a while.
    """
    now = time.time() if now is None else now
    return '%s.%s-%s-%x%s' % (name, host_tag(host), uuid.uuid4().hex[:8],
                              int(now), PARTIAL_SUFFIX)


def _partial_fields(part):
    if not part.endswith(PARTIAL_SUFFIX):
        return None, None
    fields = part[:-len(PARTIAL_SUFFIX)].rsplit('.', 1)[-1].split('-')
    if len(fields) < 2 or len(fields[0]) != 8 or not fields[1]:
        return None, None
    made_at = None
    if len(fields) == 3:
        try:
            made_at = int(fields[2], 16)
        except ValueError:
            pass
    return fields[0], made_at


def partial_owner_tag(part: str) -> str | None:
    """The host tag of a partial name, or None if it is not one."""
    return _partial_fields(part)[0]


def partial_made_at(part: str) -> float | None:
    """When a partial was started (unix time), or None if its name does not
    say (made before names carried it)."""
    return _partial_fields(part)[1]
