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
