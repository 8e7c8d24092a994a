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

"""imaged's Tempest plugin (entry point ``tempest.test_plugins``)."""

import os

from tempest.test_discover import plugins

from imaged.tempest_plugin import config


class ImagedTempestPlugin(plugins.TempestPlugin):

    def load_tests(self):
        """The scenario tests, with ids ``imaged.tempest_plugin.scenario.*``.

        Tempest names a test by its path below ``base_path``: the directory
        that holds the ``imaged`` package.
        """
        base_path = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        test_dir = os.path.join('imaged', 'tempest_plugin', 'scenario')
        return os.path.join(base_path, test_dir), base_path

    def register_opts(self, conf):
        config.register_opts(conf)

    def get_opt_lists(self):
        return [(group.name, opts) for group, opts in config.list_opts()] + [
            ('service_available', [config.service_option])]
