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

"""Image format checks and conversion to raw.

Every downloaded image goes through oslo.utils' format inspector while it
streams in: the detected format must be the one Glance declares, and the
inspector's safety checks (backing files, qcow2 data files, VMDK extents
naming host files, ...) must pass. ``qemu-img`` only ever runs on files that
passed, with their format given explicitly, under CPU, memory and wall-clock
limits; it converts into a local raw file, or straight into a new RBD image.
"""

import collections
import contextlib
import os
import signal
# Only for TimeoutExpired: qemu-img runs through processutils, with
# argument lists, never a shell.
import subprocess  # nosec B404
from typing import Any, cast, IO

from oslo_concurrency import processutils
from oslo_log import log as logging
from oslo_utils.imageutils import format_inspector
from oslo_utils import units

from imaged import exception
from imaged.i18n import _

LOG = logging.getLogger(__name__)

QEMU_IMG = 'qemu-img'

# What librados/librbd's threads reserve (stacks) in a qemu-img writing into
# Ceph, on top of [image_cache] convert_address_space_mb: with 1 GiB in all,
# 4 of 5 conversions failed to start a thread here; with 2 GiB, none.
RBD_CLIENT_ADDRESS_SPACE_MB = 2048

# Glance disk_format -> the format name qemu-img reads it as.
QEMU_FORMATS = {
    'raw': 'raw',
    'qcow2': 'qcow2',
    'vmdk': 'vmdk',
    'vhd': 'vpc',
    'vhdx': 'vhdx',
    'vdi': 'vdi',
    'iso': 'raw',
}


def is_raw(disk_format: str) -> bool:
    """Whether Glance's ``disk_format`` is read as raw (raw, iso)."""
    return QEMU_FORMATS.get(disk_format) == 'raw'


# Detected formats that are what a declared format really is: a raw disk
# with a GPT partition table is still raw.
_SAME_AS_DECLARED = {
    'raw': {'raw', 'gpt'},
}

CheckedImage = collections.namedtuple('CheckedImage',
                                      ['format', 'virtual_size'])

# The largest piece oslo.utils' inspectors are fed while one of them still
# has a region to capture. An inspector finds the regions that a region
# points to one step per chunk: when a chunk completes a region, the
# regions it names are read from that same chunk, but the regions *they*
# name only from the next one. VHDX goes three deep: its header (at 192
# KiB) names the metadata table (at 1 MiB or beyond), whose table names
# the virtual size (64 KiB or more past the table's start). Fed a 4 MiB
# block holding all three (``qemu-img convert -O vhdx``: table at 3 MiB),
# the inspector learns where the size is while reading the next block,
# after it, and never gets it: "Incomplete file cannot be safety checked".
# In 64 KiB pieces the header is complete long before the table starts,
# and the piece that brings the table's entries starts before the size:
# the size is read from that piece or the next ones.
INSPECT_PIECE = 64 * units.Ki


class _Piece:
    """The source the InspectWrapper reads: the piece being fed."""

    __slots__ = ('data',)

    def __init__(self):
        self.data = b''

    def read(self, _size):
        data, self.data = self.data, b''
        return data


class StreamInspector:
    """All of oslo.utils' format inspectors, fed a stream in any blocks.

    :meth:`feed` takes the stream's blocks in order, of any size (bytes,
    bytearray or memoryview; no inspector keeps one, regions copy what
    they capture). While an inspector still in the running has a region
    to capture, a block reaches the inspectors in :data:`INSPECT_PIECE`
    pieces (memoryview slices: no copy); once none has, whole: the
    inspectors' cost per call is paid once per block again.
    """

    def __init__(self, piece_size: int = INSPECT_PIECE) -> None:
        self._piece = _Piece()
        # The piece fed now is file-like enough for the inspectors.
        self._wrapper = format_inspector.InspectWrapper(
            cast(IO[bytes], self._piece))
        self._piece_size = piece_size

    def feed(self, data: bytes | memoryview) -> None:
        """Inspect the stream's next ``len(data)`` bytes."""
        if not self._capturing():
            self._eat(data)
            return
        piece = self._piece_size
        with memoryview(data) as view:
            for start in range(0, len(view), piece):
                if not self._capturing():
                    self._eat(view[start:])
                    break
                self._eat(view[start:start + piece])

    def _eat(self, data):
        self._piece.data = data
        self._wrapper.read(len(data))

    def _capturing(self):
        """Whether an inspector still in the running has a region left to
        capture. A region keeping the stream's last bytes (a VMDK footer)
        does not count: it is complete only at the end. This reads
        private attributes of oslo.utils (8.0 to 10.2 at least); without
        them every block goes in pieces, and test_download says so."""
        wrapper = self._wrapper
        try:
            running = wrapper._inspectors - wrapper._errored_inspectors
            return any(not region.complete and
                       not isinstance(region,
                                      format_inspector.EndCaptureRegion)
                       for inspector in running
                       for region in inspector._capture_regions.values())
        except AttributeError:  # another oslo.utils: pieces all along
            return True

    @property
    def format(self) -> Any:
        """The InspectWrapper's verdict: an inspector, or None while
        undecided; raises ``ImageFormatError`` when ambiguous."""
        return self._wrapper.format

    def close(self) -> None:
        """The stream ended (or is abandoned): inspectors finish."""
        self._wrapper.close()


def check_image(image_id: str, inspected: Any, disk_format: str,
                conf: Any) -> CheckedImage:
    """Decide whether an inspected image may be used.

    :param inspected: the :class:`StreamInspector`, fed to the end and
        closed.
    :returns: :class:`CheckedImage` with the detected format and its
              virtual size in bytes.
    :raises ImageUnacceptable: naming the reason.
    """
    def refuse(reason):
        LOG.warning('Refusing image %s: %s', image_id, reason)
        return exception.ImageUnacceptable(image_id=image_id, reason=reason)

    if disk_format not in conf.image_cache.allowed_disk_formats or \
            disk_format not in QEMU_FORMATS:
        raise refuse(_('disk_format %s is not allowed') % disk_format)
    try:
        inspector = inspected.format
    except format_inspector.ImageFormatError as e:
        raise refuse(_('its format cannot be determined safely: %s') % e)
    if inspector is None:
        raise refuse(_('its format could not be determined'))
    detected = str(inspector)
    if detected not in _SAME_AS_DECLARED.get(disk_format, {disk_format}):
        raise refuse(_('its content is %(detected)s, but Glance declares '
                       '%(declared)s') %
                     {'detected': detected, 'declared': disk_format})
    try:
        inspector.safety_check()
    except format_inspector.SafetyCheckFailed as e:
        raise refuse(_('it failed safety checks: %s') % '; '.join(
            '%s: %s' % (name, err) for name, err in
            sorted(e.failures.items())))
    except format_inspector.ImageFormatError as e:
        raise refuse(_('it cannot be safety checked: %s') % e)
    if detected == 'vmdk':
        allowed = conf.image_cache.vmdk_allowed_types
        # The inspector lower-cases createType.
        if inspector.vmdktype not in {t.lower() for t in allowed}:
            raise refuse(_('VMDK type %(type)s is not one of %(allowed)s') %
                         {'type': inspector.vmdktype,
                          'allowed': ', '.join(allowed)})
    return CheckedImage(format=disk_format,
                        virtual_size=inspector.virtual_size)


def qemu_limits(conf: Any, extra_mb: int = 0) -> Any:
    """The CPU and address-space limits every ``qemu-img`` runs under."""
    return processutils.ProcessLimits(
        cpu_time=conf.image_cache.convert_cpu_time,
        address_space=(conf.image_cache.convert_address_space_mb +
                       extra_mb) * units.Mi)


def ignore_agent_signals() -> None:
    """In qemu-img, before it runs: the agent's parent sends SIGHUP
    (reload) and SIGUSR2 (report) to its whole process group, and either
    would end a conversion; ignored signals stay ignored across exec."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def run_qemu_img(image_id: str, args: list[str], conf: Any,
                 extra_mb: int = 0) -> tuple[str, str]:
    """Run ``qemu-img args`` under the process limits and a wall-clock limit.

    :returns: ``(stdout, stderr)``.
    :raises ImageUnacceptable: it did not finish within
        ``[image_cache] convert_timeout`` seconds; it is killed first.
    :raises processutils.ProcessExecutionError: it failed.
    """
    timeout = conf.image_cache.convert_timeout
    started: list[Any] = []
    try:
        return processutils.execute(QEMU_IMG, *args,
                                    prlimit=qemu_limits(conf, extra_mb),
                                    timeout=timeout,
                                    preexec_fn=ignore_agent_signals,
                                    on_execute=started.append)
    except subprocess.TimeoutExpired:
        for process in started:  # processutils leaves it running
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.communicate()
        LOG.warning('Killed qemu-img %s for image %s after %ds',
                    args[0], image_id, timeout)
        raise exception.ImageUnacceptable(
            image_id=image_id,
            reason=_('qemu-img %(what)s did not finish within %(n)d seconds '
                     '([image_cache] convert_timeout)') %
            {'what': args[0], 'n': timeout})


def convert_to_raw(image_id: str, source: str, dest: str, disk_format: str,
                   conf: Any, cache_dir: str | None = None) -> None:
    """Write a raw (sparse) copy of a checked image with qemu-img."""
    try:
        run_qemu_img(image_id, ['convert', '-f', QEMU_FORMATS[disk_format],
                                '-O', 'raw', source, dest], conf)
    except processutils.ProcessExecutionError as e:
        if 'No space left on device' in (e.stderr or ''):
            raise exception.CacheFull(path=cache_dir or os.path.dirname(dest),
                                      image_id=image_id,
                                      reason=_('qemu-img convert: no space'))
        raise _not_converted(image_id, disk_format, e)


def convert_into_rbd(image_id: str, source: str, disk_format: str,
                     target: Any, conf: Any) -> None:
    """Write a checked image as raw into the existing RBD image ``target``
    (a :class:`imaged.storage.connection.QemuImage`).

    It must be a new image (it reads as zeros) at least as large as
    the image's virtual size: qemu-img writes only the parts holding data,
    straight into Ceph, in one pass. On failure it holds part of the
    image; the caller removes it.

    :raises ImageUnacceptable: qemu-img could not read the image, or it
        ran out of time or CPU.
    :raises StorageError: qemu-img could not write into Ceph.
    """
    try:
        run_qemu_img(image_id, [
            'convert', '-f', QEMU_FORMATS[disk_format], '-O', 'raw',
            # The target exists and reads as zeros: skip writing zeros.
            '-n', '--target-is-zero',
            # No write-back cache to copy into; writes in flight, out of
            # order, from qemu-img's most coroutines (16: about 10% faster
            # than its default 8 into Ceph here).
            '-t', 'none', '-W', '-m', '16', source, target.filename],
            conf, extra_mb=RBD_CLIENT_ADDRESS_SPACE_MB)
    except processutils.ProcessExecutionError as e:
        stderr = e.stderr or ''
        # qemu-img names the rbd: target when it cannot open or write it.
        if 'error while writing' in stderr or 'rbd:' in stderr:
            raise exception.StorageError(
                name=target.name, pool=target.pool,
                reason=_('qemu-img could not write image %(id)s into it: '
                         '%(err)s') % {'id': image_id,
                                       'err': (e.stderr or str(e)).strip()})
        raise _not_converted(image_id, disk_format, e)


def convert_from_rbd(image_id: str, source: Any, dest: str,
                     disk_format: str, conf: Any) -> None:
    """Write RBD snapshot ``source`` (a
    :class:`imaged.storage.connection.QemuImage`) as a ``disk_format`` file
    ``dest`` (a root disk's snapshot into a qcow2 Glance image).

    :raises CacheFull: no room for ``dest``.
    :raises StorageError: qemu-img could not read the snapshot, or did not
        finish within ``[image_cache] convert_timeout``.
    """
    try:
        run_qemu_img(image_id, [
            'convert', '-f', 'raw', '-O', QEMU_FORMATS[disk_format],
            '-t', 'none', '-m', '16',
            source.filename, dest],
            conf, extra_mb=RBD_CLIENT_ADDRESS_SPACE_MB)
    except processutils.ProcessExecutionError as e:
        stderr = (e.stderr or str(e)).strip()
        if 'No space left on device' in stderr:
            raise exception.CacheFull(path=os.path.dirname(dest),
                                      image_id=image_id,
                                      reason=_('qemu-img convert: no space'))
        raise exception.StorageError(
            name=source.name, pool=source.pool,
            reason=_('qemu-img could not write it as %(fmt)s for image '
                     '%(id)s: %(err)s') % {'fmt': disk_format,
                                           'id': image_id, 'err': stderr})
    except exception.ImageUnacceptable as e:  # out of time
        raise exception.StorageError(name=source.name, pool=source.pool,
                                     reason=str(e)) from e


def _not_converted(image_id, disk_format, error):
    return exception.ImageUnacceptable(
        image_id=image_id,
        reason=_('qemu-img could not convert it from %(fmt)s to raw: '
                 '%(err)s') % {'fmt': disk_format,
                               'err': (error.stderr or str(error)).strip()})
