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

"""An agent's parts over fakes, wired by :mod:`imaged.wiring`."""

from imaged import wiring


def agent(conf, glance, storage, files, notifications=None,
          signatures=None):
    """The agent of ``storage.host`` over ``glance``, ``storage`` and
    ``files`` (an ``imagecache.files.BaseFiles``); ``signatures``: an
    ``imaged.image.signature.Signatures``, or None (none verified)."""
    return wiring.build(conf, storage.host, glance_api=glance,
                        storage=storage, files=files,
                        notifications=notifications, signatures=signatures,
                        verify_signatures=False)


def root_disks(conf, glance, storage, files, notifications=None,
               signatures=None):
    """:func:`agent`'s root-disk maker; its image cache manager is
    ``.image_cache``."""
    return agent(conf, glance, storage, files, notifications,
                 signatures).root_disks
