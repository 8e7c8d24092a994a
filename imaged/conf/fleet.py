"""Fleet options of the [image_cache] group: precache and purge.

They belong with the cache's other options; they live in their own module
so that the cache and the fleet operations can change apart.
"""

from oslo_config import cfg

GROUP = 'image_cache'

fleet_opts = [
    cfg.IntOpt(
        'precache_concurrency',
        default=2,
        min=1,
        help="""
Number of images one ``cache_images`` call prepares at the same time.

Each image is fetched and made into a base image exactly as the first
``create_root_disk`` from it would; downloads also count against
``max_concurrent_downloads``.

Related options:

* ``max_concurrent_downloads``
"""),
    cfg.IntOpt(
        'glance_check_interval',
        default=3600,
        min=0,
        mutable=True,
        help="""
Seconds between two questions to Glance about the same cached image.

The cleanup task asks Glance, with imaged's own credentials, whether each
cached image still exists; an image Glance answers 404 for (or shows as
``deleted``, ``pending_delete`` or ``killed``) has its base file removed at
once and its base image in Ceph once no disk is cloned from it. An image
Glance cannot be asked about (unreachable, 5xx, timeout, 403) is kept.
0 disables the check.

Related options:

* ``manager_interval``: how often the cleanup task runs.
"""),
]


def register_opts(conf):
    conf.register_opts(fleet_opts, group=GROUP)


def list_opts():
    return {GROUP: fleet_opts}
