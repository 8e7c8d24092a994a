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

"""uWSGI entry point for Barbican, with its files inside the stack's dir.

tools/stack/barbican.sh copies this file next to barbican.conf and points
uWSGI at ``barbican_wsgi:application``, with ``BARBICAN_STACK_CONF`` and
``BARBICAN_STACK_PASTE`` in its environment.

Barbican reads /etc/barbican/barbican-api-paste.ini, and each of its
plugin modules parses its configuration again at import from the default
places (/etc/barbican/...). Every parse is made to read the stack's file
instead, and the paste pipeline is loaded from the stack's copy.
"""

import os

from barbican.common import config
from paste import deploy

CONF_FILE = os.environ['BARBICAN_STACK_CONF']
PASTE_FILE = os.environ['BARBICAN_STACK_PASTE']
_parse_args = config.parse_args


def _parse_stack_conf(conf, args=None, usage=None,
                      default_config_files=None):
    _parse_args(conf, args=args, usage=usage,
                default_config_files=default_config_files or [CONF_FILE])


config.parse_args = _parse_stack_conf
_parse_stack_conf(config.CONF)

application = deploy.loadapp('config:%s' % PASTE_FILE)
