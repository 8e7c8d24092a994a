"""An agent's parts over fakes, wired as ``imaged.cmd.imaged`` wires them."""

from imaged.imagecache import manager as imagecache_manager
from imaged import rootdisk


def root_disks(conf, glance, storage, files, notifications=None):
    """The root-disk maker over ``files`` (an ``imagecache.files.BaseFiles``);
    its image cache manager is ``.image_cache``."""
    image_cache = imagecache_manager.ImageCacheManager(
        conf, glance, storage, files, notifications)
    return rootdisk.RootDisks(conf, glance, storage, image_cache)
