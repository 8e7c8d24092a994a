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

"""Configuration options of imaged, one module per option group."""

from oslo_config import cfg

from imaged.conf import callers
from imaged.conf import default
from imaged.conf import glance
from imaged.conf import image_cache
from imaged.conf import metrics
from imaged.conf import rbd
from imaged.conf import service_user
from imaged.conf import signatures
from imaged.conf import upgrade_levels

CONF = cfg.CONF

for _module in (callers, default, glance, image_cache, metrics, rbd,
                service_user, signatures, upgrade_levels):
    _module.register_opts(CONF)
