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

"""An agent's parts over fakes, wired as ``imaged.cmd.imaged`` wires them."""

from imaged.imagecache import manager as imagecache_manager
from imaged import rootdisk


def root_disks(conf, glance, storage, files, notifications=None,
               signatures=None):
    """The root-disk maker over ``files`` (an ``imagecache.files.BaseFiles``);
    its image cache manager is ``.image_cache``; ``signatures``: an
    ``imaged.image.signature.Signatures``, or None."""
    image_cache = imagecache_manager.ImageCacheManager(
        conf, glance, storage, files, notifications, signatures)
    return rootdisk.RootDisks(conf, glance, storage, image_cache, signatures)
