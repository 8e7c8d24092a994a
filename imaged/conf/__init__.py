"""Configuration options of imaged, one module per option group."""

from oslo_config import cfg

from imaged.conf import callers
from imaged.conf import default
from imaged.conf import glance
from imaged.conf import image_cache
from imaged.conf import metrics
from imaged.conf import rbd
from imaged.conf import service_user
from imaged.conf import upgrade_levels

CONF = cfg.CONF

for _module in (callers, default, glance, image_cache, metrics, rbd,
                service_user, upgrade_levels):
    _module.register_opts(CONF)
