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

"""``imaged``: the image agent daemon."""

import logging as py_logging
import sys

from oslo_concurrency import lockutils
from oslo_log import log as logging
from oslo_service import service

from imaged import conf as imaged_conf
from imaged import crashes
from imaged import malloc
from imaged import manager as imaged_manager
from imaged import reports
from imaged import service as imaged_service
from imaged import version
from imaged import wiring

CONF = imaged_conf.CONF
LOG = logging.getLogger(__name__)


def parse_args(argv, conf=CONF):
    logging.register_options(conf)
    reports.register_opts(conf)
    lockutils.set_defaults(lock_path='$state_path/lock')
    conf(argv[1:], project='imaged', version=version.version_string())
    logging.setup(conf, 'imaged')


def build_manager(conf=CONF):
    return imaged_manager.ImageAgentManager(wiring.build(conf, conf.host))


def launch(conf, server):
    """One worker process serving ``server``; SIGHUP reloads it in place
    (``imaged.service.InPlaceReload``)."""
    launcher = service.launch(conf, server, workers=1,
                              restart_method='mutate')
    crashes.install(conf, launcher)
    imaged_service.InPlaceReload(conf, server).install(launcher)
    return launcher


def main(argv=None):
    early_sighup = imaged_service.EarlySighup().hold()
    imaged_service.LogHandlersAcrossFork().install()
    malloc.limit_arenas()
    parse_args(sys.argv if argv is None else argv)
    crashes.arm_parent(CONF)
    LOG.info('Starting imaged %s', version.version_string())
    CONF.log_opt_values(LOG, py_logging.INFO)
    server = imaged_service.ImagedService(CONF, build_manager())
    launcher = launch(CONF, server)
    reports.setup(CONF, launcher, server.manager.long_calls)
    early_sighup.release()
    try:
        return launcher.wait()
    finally:
        crashes.disarm()
        crashes.report_dead(CONF)


if __name__ == '__main__':
    sys.exit(main())
