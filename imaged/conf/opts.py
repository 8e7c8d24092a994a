"""Entry point for oslo-config-generator (``oslo.config.opts``)."""

from imaged.conf import callers
from imaged.conf import default
from imaged.conf import glance
from imaged.conf import image_cache
from imaged.conf import metrics
from imaged.conf import rbd
from imaged.conf import service_user
from imaged.conf import upgrade_levels


def list_opts():
    # Several modules may add options to one group: merge them by name,
    # keeping the OptGroup (with its help) where a module gives one.
    groups = {}
    for module in (callers, default, glance, image_cache, metrics, rbd,
                   service_user, upgrade_levels):
        for group, opts in module.list_opts().items():
            name = getattr(group, 'name', group)
            known, merged = groups.setdefault(name, (group, []))
            if not isinstance(known, str):
                group = known
            groups[name] = (group, merged + list(opts))
    return list(groups.values())
