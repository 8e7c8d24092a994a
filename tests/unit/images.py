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

"""Real image files for format tests, made once with qemu-img."""

import json
import os
import shutil
import subprocess
import tempfile


def run(*args):
    subprocess.run(args, check=True, capture_output=True)


def qemu_img(*args):
    run('qemu-img', *args)


def make_images(directory):
    """Write a set of good and hostile images; returns name -> path."""
    paths = {}

    def path(name):
        paths[name] = os.path.join(directory, name)
        return paths[name]

    with open(path('raw'), 'wb') as f:
        f.write(b'bootsector' + bytes(1024 * 1024))
    qemu_img('create', '-f', 'qcow2', path('qcow2'), '10M')
    qemu_img('create', '-f', 'qcow2', '-b', '/etc/hostname', '-F', 'raw',
             path('qcow2-backing'), '10M')
    qemu_img('create', '-f', 'qcow2', '-o',
             'data_file=%s' % os.path.join(directory, 'external.data'),
             path('qcow2-data-file'), '10M')
    qemu_img('create', '-f', 'vmdk', '-o', 'subformat=streamOptimized',
             path('vmdk-stream'), '10M')
    qemu_img('create', '-f', 'vmdk', '-o', 'subformat=monolithicFlat',
             path('vmdk-flat'), '10M')
    qemu_img('create', '-f', 'vpc', path('vhd'), '10M')
    return paths


def make_format_images(directory):
    """One small image of each format the inspectors know, made by the
    tools that make them (qemu-img, sfdisk, sgdisk, xorriso: the stack's
    install brings them); returns name -> path. A missing tool fails."""
    paths = {}

    def path(name):
        paths[name] = os.path.join(directory, name)
        return paths[name]

    source = os.path.join(directory, 'source')
    with open(source, 'wb') as f:  # 2 MiB, data in a few places
        f.truncate(2 * 1024 * 1024)
        for offset in (0, 700 * 1024, 2 * 1024 * 1024 - 4096):
            f.seek(offset)
            f.write(os.urandom(4096))
    for name, args in [('qcow2', ['qcow2']),
                       ('vmdk-sparse', ['vmdk', '-o',
                                        'subformat=monolithicSparse']),
                       ('vmdk-stream', ['vmdk', '-o',
                                        'subformat=streamOptimized']),
                       ('vhd', ['vpc']),
                       ('vhdx', ['vhdx']),  # its defaults: the bug's image
                       ('vdi', ['vdi'])]:
        qemu_img('convert', '-f', 'raw', '-O', *args, source, path(name))
    for name in ('raw-mbr', 'raw-gpt'):
        shutil.copyfile(source, path(name))
    # One Linux partition from sector 2048 to the end.
    subprocess.run(['sfdisk', '-q', paths['raw-mbr']], check=True,
                   capture_output=True, input=b'start=2048, type=83\n')
    run('sgdisk', '-n', '1:2048:0', paths['raw-gpt'])
    tree = os.path.join(directory, 'iso-tree')
    os.mkdir(tree)
    with open(os.path.join(tree, 'README'), 'w') as f:
        f.write('hello\n')
    run('xorriso', '-as', 'mkisofs', '-quiet', '-o', path('iso'), tree)
    qemu_img('create', '-f', 'qcow2', '-b', '/etc/hostname', '-F', 'raw',
             path('qcow2-backing'), '2M')
    return paths


def virtual_size(path, fmt):
    """What qemu-img says the image's virtual size is."""
    out = subprocess.run(['qemu-img', 'info', '--output=json', '-f', fmt,
                          path], check=True, capture_output=True).stdout
    return json.loads(out)['virtual-size']


def chunks_of(path, size=65536):
    with open(path, 'rb') as f:
        while True:
            chunk = f.read(size)
            if not chunk:
                return
            yield chunk


class ImageFilesMixin:
    """Gives a test class ``self.images``: name -> path of a real image."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._image_dir = tempfile.TemporaryDirectory()
        cls.images = make_images(cls._image_dir.name)

    @classmethod
    def tearDownClass(cls):
        cls._image_dir.cleanup()
        super().tearDownClass()
