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

"""Entry point for oslo-config-generator (``oslo.config.opts``)."""

from imaged.conf import callers
from imaged.conf import default
from imaged.conf import glance
from imaged.conf import image_cache
from imaged.conf import metrics
from imaged.conf import rbd
from imaged.conf import service_user
from imaged.conf import signatures
from imaged.conf import upgrade_levels


def list_opts():
    # Several modules may add options to one group: merge them by name,
    # keeping the OptGroup (with its help) where a module gives one.
    groups = {}
    for module in (callers, default, glance, image_cache, metrics, rbd,
                   service_user, signatures, upgrade_levels):
        for group, opts in module.list_opts().items():
            name = getattr(group, 'name', group)
            known, merged = groups.setdefault(name, (group, []))
            if not isinstance(known, str):
                group = known
            groups[name] = (group, merged + list(opts))
    return list(groups.values())
