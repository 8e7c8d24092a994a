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

# Sphinx configuration of imaged's documentation (tox -e docs).
import os
import sys

sys.path.insert(0, os.path.abspath('../..'))

# As the entry points do: the native-thread backend of oslo.service, chosen
# before the extensions below (the sample generator, autodoc) import it.
import imaged.cmd  # noqa: E402,F401

extensions = [
    'sphinx.ext.autodoc',
    'oslo_config.sphinxext',
    'oslo_config.sphinxconfiggen',
    'reno.sphinxext',
]

# Sphinx's own theme: openstackdocstheme installs, but it adds
# docs.openstack.org's navigation bar, search widget and analytics tag to
# every page, which do not belong to a project published elsewhere.
html_theme = 'alabaster'
html_theme_options = {'page_width': '1100px', 'body_max_width': 'none'}

project = 'imaged'
copyright = 'The imaged developers'
master_doc = 'index'
exclude_patterns = ['_build']
pygments_style = 'native'

# oslo_config.sphinxconfiggen: write _static/imaged.conf.sample from the same
# generator configuration as tox -e genconfig (configuration/sample.rst).
config_generator_config_file = '../../etc/imaged/imaged-config-generator.conf'
sample_config_basename = '_static/imaged'

autodoc_member_order = 'bysource'
