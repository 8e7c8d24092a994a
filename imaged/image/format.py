"""Image format checks and conversion to raw.

Every downloaded image goes through oslo.utils' format inspector while it
streams in: the detected format must be the one Glance declares, and the
inspector's safety checks (backing files, qcow2 data files, VMDK extents
naming host files, ...) must pass. ``qemu-img`` only ever runs on files that
passed, with their format given explicitly, under CPU and memory limits.
"""

import collections
import os

from oslo_concurrency import processutils
from oslo_log import log as logging
from oslo_utils.imageutils import format_inspector
from oslo_utils import units

from imaged import exception
from imaged.i18n import _

LOG = logging.getLogger(__name__)

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

# Detected formats that are what a declared format really is: a raw disk
# with a GPT partition table is still raw.
_SAME_AS_DECLARED = {
    'raw': {'raw', 'gpt'},
}

CheckedImage = collections.namedtuple('CheckedImage',
                                      ['format', 'virtual_size'])


def inspect_stream(chunks):
    """Wrap an iterator of byte chunks so every format inspector sees it."""
    return format_inspector.InspectWrapper(iter(chunks))


def check_image(image_id, wrapper, disk_format, conf):
    """Decide whether an inspected image may be used.

    :param wrapper: the :func:`inspect_stream` wrapper, read to the end.
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
        inspector = wrapper.format
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


def convert_to_raw(image_id, source, dest, disk_format, conf,
                   cache_dir=None):
    """Write a raw (sparse) copy of a checked image with qemu-img."""
    limits = processutils.ProcessLimits(
        cpu_time=conf.image_cache.convert_cpu_time,
        address_space=conf.image_cache.convert_address_space_mb * units.Mi)
    try:
        processutils.execute(
            'qemu-img', 'convert', '-f', QEMU_FORMATS[disk_format],
            '-O', 'raw', source, dest, prlimit=limits)
    except processutils.ProcessExecutionError as e:
        if 'No space left on device' in (e.stderr or ''):
            raise exception.CacheFull(path=cache_dir or os.path.dirname(dest),
                                      image_id=image_id,
                                      reason=_('qemu-img convert: no space'))
        raise exception.ImageUnacceptable(
            image_id=image_id,
            reason=_('qemu-img could not convert it from %(fmt)s to raw: '
                     '%(err)s') % {'fmt': disk_format,
                                   'err': (e.stderr or str(e)).strip()})
