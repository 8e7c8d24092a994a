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

"""Argument checks shared by the RPC endpoint and the command-line client.

Each returns the canonical form of a valid argument, or raises
``InvalidInput`` naming the argument and why.
"""

import uuid

from imaged import exception
from imaged.i18n import _

# One cache_images call names at most this many images.
MAX_PRECACHE_IMAGES = 256


def validate_uuid(argument, value):
    """The canonical (lower-case, hyphenated) form of a UUID argument."""
    if not isinstance(value, str):
        raise exception.InvalidInput(
            argument=argument, reason=_('must be a UUID string, not %s') %
            type(value).__name__)
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        canonical = None
    if canonical is None or canonical != value.lower():
        raise exception.InvalidInput(
            argument=argument,
            reason=_('%r is not a UUID like '
                     '123e4567-e89b-12d3-a456-426614174000') % value[:80])
    return canonical


def validate_size_gb(value, maximum):
    if type(value) is not int:  # bool is an int, but not a size
        raise exception.InvalidInput(
            argument='size_gb', reason=_('must be a whole number of GiB, '
                                         'not %r') % (value,))
    if not 1 <= value <= maximum:
        raise exception.InvalidInput(
            argument='size_gb', reason=_('%(value)d is outside 1..%(max)d') %
            {'value': value, 'max': maximum})
    return value


def validate_image_ids(value, maximum=MAX_PRECACHE_IMAGES):
    """Canonical, distinct image ids; refuses the list as a whole."""
    if not isinstance(value, list):
        raise exception.InvalidInput(
            argument='image_ids', reason=_('must be a list of image UUIDs, '
                                           'not %s') % type(value).__name__)
    if not 1 <= len(value) <= maximum:
        raise exception.InvalidInput(
            argument='image_ids',
            reason=_('must name 1..%(max)d images, not %(n)d') %
            {'max': maximum, 'n': len(value)})
    image_ids = [validate_uuid('image_ids[%d]' % i, image_id)
                 for i, image_id in enumerate(value)]
    seen = set()
    for i, image_id in enumerate(image_ids):
        if image_id in seen:
            raise exception.InvalidInput(
                argument='image_ids[%d]' % i,
                reason=_('%s is named twice') % image_id)
        seen.add(image_id)
    return image_ids


# Trusted certificates one call may name (nova allows 50).
MAX_TRUSTED_CERTS = 50


def validate_certificate_ids(value, maximum=MAX_TRUSTED_CERTS):
    """The trusted certificate ids of a call (key manager UUIDs), or None
    when it gives none."""
    if value is None or value == []:
        return None
    if not isinstance(value, list) or len(value) > maximum:
        raise exception.InvalidInput(
            argument='trusted_certs',
            reason=_('must be a list of at most %d certificate UUIDs') %
            maximum)
    return [validate_uuid('trusted_certs[%d]' % i, cert_id)
            for i, cert_id in enumerate(value)]
