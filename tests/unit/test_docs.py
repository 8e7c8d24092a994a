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

"""The README and the Sphinx docs hold together, without Sphinx.

``tox -e docs`` builds them with warnings as errors; these checks catch, at
unit-test speed, what breaks silently between two docs builds: a command a
newcomer or CI relies on leaving the README, a page no toctree reaches, a
reference, figure or path to nothing, an option namespace that no longer
matches the entry point, a release note reno cannot read.
"""

import os
import re

import yaml

from tests import base

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')
DOC = os.path.join(ROOT, 'doc', 'source')
NOTES = os.path.join(ROOT, 'releasenotes', 'notes')
RENO_SECTIONS = {'prelude', 'features', 'issues', 'upgrade', 'deprecations',
                 'critical', 'security', 'fixes', 'other'}


def read(*path):
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


def doc_pages():
    """``{name: text}`` of every page, ``install/systemd`` style."""
    pages = {}
    for top, _dirs, files in os.walk(DOC):
        for name in files:
            if name.endswith('.rst'):
                path = os.path.join(top, name)
                with open(path) as f:
                    pages[os.path.relpath(path, DOC)[:-4]] = f.read()
    return pages


def toctree_entries(page, text):
    """The pages a page's toctrees name, as names relative to DOC."""
    entries = []
    for block in re.findall(r'^\.\. toctree::\n((?:[ \t]+.*\n|\n)*)', text,
                            re.M):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(':'):
                entries.append(os.path.normpath(
                    os.path.join(os.path.dirname(page), line)))
    return entries


def section(text, title):
    """The body of the README section ``title`` (up to the next one)."""
    match = re.search(r'^%s\n=+\n(.*?)(?=^\S[^\n]*\n=+\n|\Z)'
                      % re.escape(title), text, re.M | re.S)
    return match.group(1) if match else ''


class ReadmeTest(base.TestCase):

    def test_quick_start_command_stays(self):
        quick = section(read('README.rst'), 'Quick start')
        self.assertIn('fresh Debian 12 (bookworm) or Debian 13 (trixie) '
                      'machine, as root', ' '.join(quick.split()))
        self.assertRegex(quick, r'::\n\n    tools/quickstart\.sh\n')

    def test_test_command_stays_and_is_what_ci_runs(self):
        tests = section(read('README.rst'), 'Tests')
        self.assertRegex(tests, r'::\n\n    tools/run-tests\.sh\n')
        self.assertIn('tools/run-tests.sh', read('.ci', 'run'))

    def test_docs_paths_named_exist(self):
        readme = read('README.rst')
        paths = re.findall(r'``(doc/source/[^`]+)``', readme)
        self.assertTrue(paths)
        for path in paths:
            self.assertTrue(os.path.exists(os.path.join(ROOT, path)), path)
        for folder, names in re.findall(
                r'\(``(doc/source/[a-z]+/)``\)\n((?:    .*\n)+)', readme):
            for name in re.findall(r'``([a-z0-9-]+\.rst)``', names):
                self.assertTrue(
                    os.path.exists(os.path.join(ROOT, folder, name)),
                    folder + name)


class DocsTest(base.TestCase):

    def test_every_page_is_in_a_toctree_and_every_entry_is_a_page(self):
        pages = doc_pages()
        reached = set()
        for page, text in pages.items():
            for entry in toctree_entries(page, text):
                self.assertIn(entry, pages, 'toctree of %s' % page)
                reached.add(entry)
        self.assertEqual(set(pages) - {'index'}, reached)

    def test_every_ref_has_a_label(self):
        text = ''.join(doc_pages().values())
        labels = set(re.findall(r'^\.\. _([a-z0-9-]+):$', text, re.M))
        refs = re.findall(r':ref:`(?:[^`<]*<)?([a-z0-9-]+)>?`', text)
        self.assertTrue(refs)
        for ref in refs:
            self.assertIn(ref, labels)

    def test_figures_and_downloads_exist(self):
        for page, text in doc_pages().items():
            files = re.findall(r'^\.\. (?:image|figure):: (\S+)$', text, re.M)
            files += re.findall(r':download:`[^`<]*<([^>]+)>`', text)
            for name in files:
                path = os.path.join(DOC, os.path.dirname(page), name)
                self.assertTrue(os.path.exists(path), '%s: %s' % (page, name))

    def test_show_options_namespace_is_the_entry_point(self):
        pyproject = read('pyproject.toml')
        entry = re.search(r'\[project\.entry-points\."oslo\.config\.opts"\]\n'
                          r'(\S+) = "imaged\.conf\.opts:list_opts"', pyproject)
        self.assertIsNotNone(entry)
        shown = re.findall(r'^\.\. show-options:: (.+)$',
                           ''.join(doc_pages().values()), re.M)
        self.assertEqual([entry.group(1)], [s.strip() for s in shown])
        self.assertIn('namespace = %s\n' % entry.group(1),
                      read('etc', 'imaged', 'imaged-config-generator.conf'))


class ReleaseNotesTest(base.TestCase):

    def test_every_note_is_yaml_reno_reads(self):
        names = [n for n in os.listdir(NOTES) if not n.startswith('.')]
        self.assertTrue(names)
        for name in names:
            self.assertRegex(name, r'^[a-z0-9-]+-[0-9a-f]{16}\.yaml$')
            with open(os.path.join(NOTES, name)) as f:
                note = yaml.safe_load(f)
            self.assertIsInstance(note, dict, name)
            self.assertLessEqual(set(note), RENO_SECTIONS, name)
            for key, value in note.items():
                if key == 'prelude':
                    self.assertIsInstance(value, str, name)
                else:
                    self.assertIsInstance(value, list, name)
                    for item in value:
                        self.assertIsInstance(item, str, name)
