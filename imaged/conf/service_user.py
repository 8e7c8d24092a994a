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

"""Options of the [service_user] group: the service token sent with a caller's.

As nova's group of the same name: when a call carries the caller's token,
imaged sends it to Glance together with a token of its own service user, so
that a caller's token that expires during a long call is still accepted
(keystonemiddleware's ``service_token_roles``).
"""

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

SERVICE_USER_GROUP = 'service_user'

service_user_group = cfg.OptGroup(
    SERVICE_USER_GROUP,
    title='Service token options',
    help="""
The service user whose token imaged sends, as ``X-Service-Token``, with the
caller's token when it calls Glance on the caller's behalf.
""")

service_user_opts = [
    cfg.BoolOpt(
        'send_service_user_token',
        default=True,
        help="""
Send a service token along with the caller's token to Glance.

A caller's token may expire while imaged works for it (a long download, a
wait for a copy in Glance); with a valid service token beside it,
keystonemiddleware accepts the expired token when the service token has one
of its ``service_token_roles`` (``service`` by default). Calls that carry no
caller's token use imaged's own credentials from ``[glance]`` and need no
service token.

The service token is obtained with the credentials of this group; when this
group sets no ``auth_type``, with those of ``[glance]`` (imaged's own service
user). When neither group has credentials (a Glance without Keystone), only
the caller's token is sent.

Related options:

* ``[glance] auth_type`` and the credentials in ``[glance]``
"""),
]


def register_opts(conf):
    conf.register_group(service_user_group)
    conf.register_opts(service_user_opts, group=service_user_group)
    ks_loading.register_session_conf_options(conf, SERVICE_USER_GROUP)
    ks_loading.register_auth_conf_options(conf, SERVICE_USER_GROUP)


def list_opts():
    return {
        service_user_group: (
            list(service_user_opts) +
            ks_loading.get_session_conf_options() +
            ks_loading.get_auth_common_conf_options() +
            ks_loading.get_auth_plugin_conf_options('password'))
    }
