"""What Glance's image record alone rules out, before any byte moves."""

from oslo_utils import units

from imaged import exception
from imaged.i18n import _
from imaged.image import format as image_format


def check(image, size_bytes, conf, keeps_file):
    """Refuse an image its record already says imaged cannot use.

    :param size_bytes: the root disk it must fit in.
    :param keeps_file: whether its bytes would be kept in the local cache
        (then they must fit ``[image_cache] max_size_gb``).
    :raises ImageUnacceptable, ImageTooLarge: naming the image and why.
    """
    image_id = image['id']

    def refuse(reason):
        return exception.ImageUnacceptable(image_id=image_id, reason=reason)

    if image.get('status') != 'active':
        raise refuse(_('its status is %s, not active') % image.get('status'))
    disk_format = image.get('disk_format')
    if not disk_format:
        raise refuse(_('it has no disk_format'))
    if disk_format not in conf.image_cache.allowed_disk_formats or \
            disk_format not in image_format.QEMU_FORMATS:
        raise refuse(_('disk_format %s is not allowed') % disk_format)
    container = image.get('container_format')
    if container and container not in \
            conf.image_cache.allowed_container_formats:
        raise refuse(_('container_format %s cannot be used') % container)
    max_cache = conf.image_cache.max_size_gb * units.Gi
    if keeps_file and max_cache and (image.get('size') or 0) > max_cache:
        raise refuse(_('its size of %(size)d bytes is above the image '
                       'cache bound of %(max)s GiB') %
                     {'size': image['size'],
                      'max': conf.image_cache.max_size_gb})
    known = image.get('virtual_size')
    if not known and image_format.QEMU_FORMATS[disk_format] == 'raw':
        known = image.get('size')
    if known and known > size_bytes:
        raise exception.ImageTooLarge(image_id=image_id, virtual_size=known,
                                      size_bytes=size_bytes)
