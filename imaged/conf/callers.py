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

"""Options of the [callers] group: who a caller of imaged is.

A call's context is a claim; the caller is whoever Keystone says its token
belongs to (:mod:`imaged.identity`), and what it may do is
:mod:`imaged.policy`'s.
"""

from oslo_config import cfg

callers_group = cfg.OptGroup(
    'callers',
    title='Callers of imaged',
    help="""
How imaged learns who calls it: the token in the call's context is
validated with Keystone as imaged's service user (``[glance]``
credentials), and the project, user and roles are Keystone's answer, never
the message's.
""")

callers_opts = [
    cfg.BoolOpt(
        'tokenless_calls_act_as_imaged',
        default=False,
        help="""
Let calls without a token act with imaged's own Keystone user.

Off (the default), a call without a token is anonymous: it may make root
disks of public and community images only, and may not snapshot, flatten
or delete a disk a project owns. On, anyone who can put a message on
imaged's topic acts with imaged's rights (it reads every project's private
images and acts on every disk): only for a bus where every sender is
trusted. ``imaged-status upgrade check`` warns while it is on.

Deployments without Keystone (``[glance] auth_type = none``) act as
imaged whatever this says: there is nobody to ask who the caller is.

Related options:

* ``[glance] auth_type``
"""),
    cfg.IntOpt(
        'token_cache_size',
        default=1024,
        min=1,
        help="""
How many validated tokens imaged remembers, so that a token is validated
with Keystone once, not on every call.

Related options:

* ``token_cache_time``
"""),
    cfg.IntOpt(
        'token_cache_time',
        default=300,
        min=0,
        help="""
Seconds a token validated by Keystone is remembered at most (never past the
token's own expiry). A token revoked in Keystone is still accepted by imaged
for up to this long.

Possible values:

* 0: validate every call's token with Keystone.
* A number of seconds.

Related options:

* ``token_cache_size``
"""),
    cfg.StrOpt(
        'keystone_interface',
        default='public',
        choices=['public', 'internal', 'admin'],
        help="""
The interface of Keystone's catalog entry imaged validates tokens at.
"""),
]


def register_opts(conf):
    conf.register_group(callers_group)
    conf.register_opts(callers_opts, group=callers_group)


def list_opts():
    return {callers_group: list(callers_opts)}
