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

"""Options of the [upgrade_levels] group: RPC version caps for upgrades."""

from oslo_config import cfg

upgrade_group = cfg.OptGroup(
    'upgrade_levels',
    title='RPC version caps',
    help='Cap the RPC version a client sends, so that callers can be '
         'upgraded before the agents they call.')

upgrade_opts = [
    cfg.StrOpt(
        'imaged',
        help="""
Highest imaged RPC API version this client sends.

Possible values:

* Unset: no cap (the newest version this code knows).
* A version such as ``1.0``.
"""),
]


def register_opts(conf):
    conf.register_group(upgrade_group)
    conf.register_opts(upgrade_opts, group=upgrade_group)


def list_opts():
    return {upgrade_group: upgrade_opts}
