"""Real image files for format tests, made once with qemu-img."""

import os
import subprocess
import tempfile


def qemu_img(*args):
    subprocess.run(('qemu-img',) + args, check=True, capture_output=True)


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
