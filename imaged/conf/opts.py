"""Entry point for oslo-config-generator (``oslo.config.opts``)."""

from imaged.conf import default
from imaged.conf import glance
from imaged.conf import image_cache
from imaged.conf import rbd
from imaged.conf import service_user
from imaged.conf import upgrade_levels


def list_opts():
    groups = {}
    for module in (default, glance, image_cache, rbd, service_user,
                   upgrade_levels):
        for group, opts in module.list_opts().items():
            groups.setdefault(group, []).extend(opts)
    return list(groups.items())
