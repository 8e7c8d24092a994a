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

"""A small disk that boots, built from Debian packages, and QEMU to boot it.

The disk (:data:`DISK_SIZE`, raw, MBR) has one FAT partition holding a
Debian kernel (``vmlinuz`` taken from the ``linux-image-*-cloud-amd64``
.deb with ``apt-get download`` and ``dpkg-deb -x``: the host's kernel is
never touched), an initramfs made of the static busybox, the virtio block
modules of that kernel and :data:`INIT`, and SYSLINUX (its MBR code, and
its boot sector and ``ldlinux.sys`` installed by the mtools ``syslinux``).
No loop device and no mount: the partition table is written by ``sfdisk``,
the file system by ``mkfs.fat --offset`` and filled by ``mcopy``.

The guest's init prints what the test reads on the serial console (lines
starting with :data:`CONSOLE_TAG`), writes :data:`GUEST_MARKER` at each of
:data:`MARKER_OFFSETS` of its disk, syncs and powers off.

The built disk is kept under a cache directory, named after what went into
it, so that later runs reuse it; parallel tests build it once. Two builds
from the same packages are the same bytes (fixed times, volume id and disk
id), and a build takes seconds, bounded: every command has a timeout.
"""

import contextlib
import fcntl
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import signal
import subprocess
import time

from oslo_utils import units

KERNEL_METAPACKAGE = 'linux-image-cloud-amd64'
DISK_SIZE = 32 * units.Mi
PARTITION_START = units.Mi  # sector 2048: the first MiB holds only the MBR
# The virtio block driver and what it needs, in load order; those the
# kernel has built in (Debian 13's: all but virtio_blk) are skipped.
MODULES = (
    ('drivers/virtio', 'virtio_ring'),
    ('drivers/virtio', 'virtio'),
    ('drivers/virtio', 'virtio_pci_legacy_dev'),
    ('drivers/virtio', 'virtio_pci_modern_dev'),
    ('drivers/virtio', 'virtio_pci'),
    ('drivers/block', 'virtio_blk'),
)
CONSOLE_TAG = 'IMAGED-BOOT:'
GUEST_MARKER = b'imaged boot test: the guest wrote this block'.ljust(512, b'.')
# Where the guest writes the marker: inside the image's bytes (a zero
# sector between the MBR and the partition), and beyond them (at 1 GiB).
MARKER_OFFSETS = (512 * units.Ki, units.Gi)
COMMAND_TIMEOUT = 120
DOWNLOAD_TIMEOUT = 600

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
uptime() { cut -d' ' -f1 /proc/uptime; }
echo "%(tag)s init started, kernel $(uname -r), uptime $(uptime)"
for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko || echo "%(tag)s insmod $m failed"
done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
echo "%(tag)s disk vda sectors $(cat /sys/block/vda/size)"
for offset in %(offsets)s; do
    if dd if=/marker of=/dev/vda bs=512 seek=$((offset / 512)) \
            conv=notrunc,fsync 2>/dev/null; then
        echo "%(tag)s wrote marker at $offset"
    else
        echo "%(tag)s write at $offset failed"
    fi
done
sync
echo "%(tag)s powering off, uptime $(uptime)"
poweroff -f
""" % {'tag': CONSOLE_TAG,
       'offsets': ' '.join(str(o) for o in MARKER_OFFSETS)}

SYSLINUX_CFG = """SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 quiet panic=-1
"""

SYSLINUX_MBR = '/usr/lib/syslinux/mbr/mbr.bin'
FIXED_MTIME = 1700000000  # of every file in the image


class BuildError(Exception):
    pass


def _run(*args, timeout=COMMAND_TIMEOUT, **kwargs):
    # SOURCE_DATE_EPOCH: mtools (and so syslinux) stamp files with it, so
    # that two builds of the same inputs are the same bytes.
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1', LC_ALL='C',
               SOURCE_DATE_EPOCH=str(FIXED_MTIME))
    try:
        return subprocess.run(args, check=True, capture_output=True,
                              timeout=timeout, env=env, text=True, **kwargs)
    except subprocess.CalledProcessError as e:
        raise BuildError('%s failed (exit %s): %s' % (
            ' '.join(args), e.returncode, (e.stderr or e.stdout).strip()))
    except subprocess.TimeoutExpired:
        raise BuildError('%s did not finish in %ss' % (
            ' '.join(args), timeout))


def _version(package):
    return _run('dpkg-query', '-W', '-f', '${Version}', package).stdout


def kernel_package():
    """The kernel package the metapackage depends on now."""
    out = _run('apt-cache', 'depends', KERNEL_METAPACKAGE).stdout
    match = re.search(r'Depends: (linux-image-\S+)', out)
    if not match:
        raise BuildError('no kernel package behind %s (apt-get update?): %s'
                         % (KERNEL_METAPACKAGE, out))
    return match.group(1)


def _download(package, directory):
    """``apt-get download`` into ``directory``; the .deb's path."""
    for attempt in range(2):
        try:
            _run('apt-get', 'download', '-q', package, cwd=directory,
                 timeout=DOWNLOAD_TIMEOUT)
            break
        except BuildError:
            if attempt:
                raise
            # An older list may name a file the mirror no longer has.
            _run('apt-get', '-o', 'DPkg::Lock::Timeout=300', 'update', '-q',
                 timeout=DOWNLOAD_TIMEOUT)
    debs = [n for n in os.listdir(directory)
            if n.startswith(package + '_') and n.endswith('.deb')]
    if len(debs) != 1:
        raise BuildError('apt-get download %s left %s' % (package, debs))
    return os.path.join(directory, debs[0])


def _newc(entries):
    """A ``newc`` cpio archive of ``(name, mode, data)``, fixed metadata."""
    out = io.BytesIO()

    def pad():
        out.write(b'\0' * (-out.tell() % 4))

    for ino, (name, mode, data) in enumerate(
            list(entries) + [('TRAILER!!!', 0, b'')], start=1):
        encoded = name.encode() + b'\0'
        fields = (ino, mode, 0, 0, 1, FIXED_MTIME, len(data), 0, 0, 0, 0,
                  len(encoded), 0)
        out.write(b'070701' + b''.join(b'%08X' % f for f in fields))
        out.write(encoded)
        pad()
        out.write(data)
        pad()
    return out.getvalue()


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _module(release_dir, subdir, name):
    """A module's bytes, uncompressed; None if the kernel has it built in.

    Debian 12's kernel ships ``.ko`` files, Debian 13's ``.ko.xz`` (which
    busybox's insmod cannot load) and has the virtio core built in.
    """
    base = os.path.join(release_dir, 'kernel', subdir, name + '.ko')
    if os.path.exists(base):
        return _read(base)
    if os.path.exists(base + '.xz'):
        return lzma.decompress(_read(base + '.xz'))
    if os.path.exists(base + '.gz'):
        return gzip.decompress(_read(base + '.gz'))
    builtin = os.path.join(release_dir, 'modules.builtin')
    if os.path.exists(builtin):
        with open(builtin) as f:
            if 'kernel/%s/%s.ko' % (subdir, name) in f.read().split():
                return None
    raise BuildError('the kernel has no module %s/%s (.ko, .ko.xz, .ko.gz) '
                     'and does not have it built in' % (subdir, name))


def _initramfs(release_dir):
    entries = [('bin', 0o40755, b''), ('lib', 0o40755, b''),
               ('lib/modules', 0o40755, b''),
               ('bin/busybox', 0o100755, _read('/bin/busybox')),
               ('init', 0o100755, INIT.encode()),
               ('marker', 0o100644, GUEST_MARKER)]
    load_order = []
    for subdir, name in MODULES:
        data = _module(release_dir, subdir, name)
        if data is not None:
            entries.append(('lib/modules/%s.ko' % name, 0o100644, data))
            load_order.append(name)
    entries.append(('lib/modules/load-order', 0o100644,
                    ''.join(n + '\n' for n in load_order).encode()))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode='wb', mtime=0) as gz:
        gz.write(_newc(entries))
    return out.getvalue()


def _build(kernel_deb, work, disk):
    root = os.path.join(work, 'kernel')
    _run('dpkg-deb', '-x', kernel_deb, root, timeout=COMMAND_TIMEOUT)
    vmlinuz, = [os.path.join(root, 'boot', n)
                for n in os.listdir(os.path.join(root, 'boot'))
                if n.startswith('vmlinuz-')]
    release = os.path.basename(vmlinuz)[len('vmlinuz-'):]
    # (/lib/modules in Debian 12's package, /usr/lib/modules in 13's)
    dirs = [d for d in (os.path.join(root, 'lib', 'modules', release),
                        os.path.join(root, 'usr', 'lib', 'modules', release))
            if os.path.isdir(d)]
    if not dirs:
        raise BuildError('%s has no modules directory for %s'
                         % (os.path.basename(kernel_deb), release))
    release_dir = dirs[0]
    initrd = os.path.join(work, 'initrd.gz')
    with open(initrd, 'wb') as f:
        f.write(_initramfs(release_dir))
    cfg = os.path.join(work, 'syslinux.cfg')
    with open(cfg, 'w') as f:
        f.write(SYSLINUX_CFG)
    for path in (vmlinuz, initrd, cfg):
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))

    with open(disk, 'wb') as f:
        f.truncate(DISK_SIZE)
    _run('sfdisk', '--no-reread', '--no-tell-kernel', '-q', disk,
         input='label: dos\nlabel-id: 0x1d15c0de\n'
               'start=%d, type=c, bootable\n' % (PARTITION_START // 512))
    sectors = (DISK_SIZE - PARTITION_START) // 512
    _run('mkfs.fat', '--invariant', '-i', '1d15c0de', '-n', 'IMAGEDBOOT',
         '-h', str(PARTITION_START // 512),
         '--offset', str(PARTITION_START // 512), disk, str(sectors // 2))
    fat = '%s@@%d' % (disk, PARTITION_START)
    for path, name in ((vmlinuz, 'vmlinuz'), (initrd, 'initrd.gz'),
                       (cfg, 'syslinux.cfg')):
        _run('mcopy', '-m', '-i', fat, path, '::' + name)
    _run('syslinux', '--install', '--offset', str(PARTITION_START), disk)
    with open(SYSLINUX_MBR, 'rb') as f:
        mbr_code = f.read()[:440]  # not the disk signature or the table
    with open(disk, 'r+b') as f:
        f.write(mbr_code)
    return release


@contextlib.contextmanager
def _locked(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build(cache_dir):
    """Path of the raw boot disk, built once into ``cache_dir``."""
    os.makedirs(cache_dir, exist_ok=True)
    with _locked(os.path.join(cache_dir, '.lock')):
        package = kernel_package()
        recipe = '\n'.join((
            package, _version('busybox-static'), _version('syslinux'),
            INIT, SYSLINUX_CFG, str(DISK_SIZE), str(PARTITION_START)))
        key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
        disk = os.path.join(cache_dir, 'bootdisk-%s.raw' % key)
        if os.path.exists(disk):
            return disk
        work = os.path.join(cache_dir, 'build')
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        try:
            debs = os.path.join(work, 'debs')
            os.makedirs(debs)
            _build(_download(package, debs), work, disk + '.part')
            os.rename(disk + '.part', disk)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(disk + '.part')
        # Older builds are of no use any more.
        for name in os.listdir(cache_dir):
            if name.startswith('bootdisk-') and name != os.path.basename(disk):
                os.unlink(os.path.join(cache_dir, name))
        return disk


def missing_reports(reports, disk_size):
    """What a guest's :meth:`Boot.reports` lack of a boot that ran its
    init, saw its disk of ``disk_size`` bytes, wrote the marker at every
    one of :data:`MARKER_OFFSETS` and powered off: [] when nothing."""
    missing = []
    if not any(r.startswith('init started') for r in reports):
        missing.append('init started')
    missing.extend(want for want in (
        ['disk vda sectors %d' % (disk_size // 512)] +
        ['wrote marker at %d' % offset for offset in MARKER_OFFSETS])
        if want not in reports)
    if not any(r.startswith('powering off') for r in reports):
        missing.append('powering off')
    return missing


def rbd_drive(pool, image, user=None, conf=None, keyring=None):
    """QEMU's ``-drive`` for an RBD image (its legacy ``rbd:`` syntax,
    which also takes a keyring) on the guest's virtio bus."""
    spec = 'rbd:%s/%s' % (pool, image)
    for key, value in (('id', user), ('conf', conf), ('keyring', keyring)):
        if value:
            if ':' in value or ',' in value:
                raise ValueError('%s %r holds a ":" or ","' % (key, value))
            spec += ':%s=%s' % (key, value)
    return 'file=%s,format=raw,if=virtio,cache=writeback' % spec


class Boot:
    """One QEMU run (TCG, no network, serial console to a file)."""

    def __init__(self, qemu, drive, console_path, memory_mb=256):
        self.console_path = console_path
        # QEMU dies with the test process, whatever kills it.
        self.command = [
            'setpriv', '--pdeathsig', 'KILL', '--',
            qemu, '-accel', 'tcg', '-machine', 'pc', '-m', str(memory_mb),
            '-smp', '1', '-nodefaults', '-no-user-config', '-nographic',
            '-no-reboot', '-serial', 'file:%s' % console_path,
            '-drive', drive]
        self.process = None
        self.seconds = None
        self.returncode = None
        self.output = b''  # QEMU's own stdout and stderr

    def run(self, timeout):
        """Boot, wait until the guest powers off or ``timeout`` passes
        (then QEMU is ended). True if it powered off in time."""
        started = time.monotonic()
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.output, _ = self.process.communicate(timeout=timeout)
            self.returncode = self.process.returncode
            return True
        except subprocess.TimeoutExpired:
            return False
        finally:
            self.seconds = time.monotonic() - started
            self.stop()

    def stop(self):
        """End QEMU: SIGTERM (it closes its disks), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def console(self):
        try:
            with open(self.console_path, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def reports(self):
        """What the guest's init printed, without its tag."""
        return [line.split(CONSOLE_TAG, 1)[1].strip()
                for line in self.console().splitlines()
                if CONSOLE_TAG in line]
