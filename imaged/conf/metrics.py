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

"""Options of the [metrics] group: the Prometheus endpoint."""

from oslo_config import cfg

metrics_group = cfg.OptGroup(
    'metrics',
    title='Prometheus metrics',
    help='The agent serves its figures in Prometheus\' text format at '
         '``http://<host>:<port>/metrics``.')

metrics_opts = [
    cfg.BoolOpt(
        'enabled',
        default=False,
        help="""
Serve Prometheus metrics. Without it the figures are still kept (they cost
a few counters) but nothing listens.

Related options:

* ``host``, ``port``
"""),
    cfg.HostAddressOpt(
        'host',
        default='127.0.0.1',
        help="""
Address the metrics endpoint listens on. The default keeps it on the
host; a Prometheus elsewhere needs an address it can reach (the endpoint
has no authentication: keep it on a management network).
"""),
    cfg.PortOpt(
        'port',
        default=9324,
        help="""
Port of the metrics endpoint (keep it outside Ceph's 6800-7300).
"""),
]


def register_opts(conf):
    conf.register_group(metrics_group)
    conf.register_opts(metrics_opts, group=metrics_group)


def list_opts():
    return {metrics_group: metrics_opts}
