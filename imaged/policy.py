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

"""Who the caller of an RPC call is, and what it may do.

A call's context says who sent it; imaged believes Keystone instead
(:mod:`imaged.identity`). :meth:`Callers.identify` gives each call one
:class:`Caller`, attached to its context as ``caller``, with the project,
user and roles of its token. The rules, as nova's policy documents them:

``get_capabilities``
    anyone.
``create_root_disk``
    a token that may read the image in Glance; without a token, public and
    community images only. The disk then belongs to the token's project.
``create_root_disk`` of a disk that exists
    the disk's project, or a token with the ``admin`` or ``service`` role.
``snapshot_root_disk``
    the disk's project, or ``admin``/``service``; never without a token.
``flatten_root_disk``, ``delete_root_disk``
    the disk's project, or ``admin``/``service``; without a token, only a
    disk a tokenless call made (which belongs to nobody).
``cache_images``
    anyone (an operator's call: it gives nobody a disk; without a token
    imaged reads the images as its own user).
``list_cached_images``
    a token with the ``admin`` or ``service`` role.

Disks made before imaged recorded their project belong to nobody yet: the
first of those calls from an ``admin`` or ``service`` token adopts the disk
for that token's project; anyone else is refused.

Two deployments are trusted instead, and act with imaged's own rights:
one without Keystone (``[glance] auth_type = none``: nobody to ask), and,
for calls without a token, one whose operator set ``[callers]
tokenless_calls_act_as_imaged`` (a bus where every sender is trusted).
"""

from keystoneauth1 import noauth
from oslo_log import log as logging

from imaged import deadline as call_deadline
from imaged import exception
from imaged.i18n import _
from imaged import identity as ks_identity

LOG = logging.getLogger(__name__)

# Roles that may act on any disk: a conductor's own service user, an
# operator.
PRIVILEGED_ROLES = frozenset(('admin', 'service'))
# The owner recorded for a disk a tokenless call made: nobody's (never a
# Keystone project id, which is hexadecimal).
NOBODY = '-'
# Glance visibilities a tokenless call may make disks of.
ANONYMOUS_VISIBILITIES = ('public', 'community')


class Caller:
    """Who a call comes from.

    :param kind: ``'user'`` (a token Keystone validated), ``'anonymous'``
        (no token) or ``'trusted'`` (acts as imaged: no Keystone, or a
        trusted bus).
    """

    def __init__(self, kind, project_id=None, user_id=None, roles=()):
        self.kind = kind
        self.project_id = project_id
        self.user_id = user_id
        self.roles = frozenset(roles)
        # Images a tokenless call found public or community: read as
        # imaged's user from then on.
        self._public_images = set()

    @property
    def privileged(self):
        """May act on any disk: trusted, or an admin or service token."""
        return self.kind == 'trusted' or bool(self.roles & PRIVILEGED_ROLES)

    @property
    def anonymous(self):
        return self.kind == 'anonymous'

    def reads_as_imaged(self, image_id):
        """Whether Glance is read with imaged's own user for this tokenless
        caller: a trusted one, or for an image found public."""
        return self.kind == 'trusted' or image_id in self._public_images

    def may_use(self, image):
        """A tokenless call's image: refused unless public or community;
        then read as imaged's user.

        :raises NotAuthorized: naming the image and its visibility.
        """
        if not self.anonymous:
            return
        if image.visibility not in ANONYMOUS_VISIBILITIES:
            raise exception.NotAuthorized(
                action=_('make a disk of image %s') % image.id,
                reason=_('calls without a token may use public and '
                         'community images only, not a %s one') %
                image.visibility)
        self._public_images.add(image.id)

    def owner_of_new_disk(self):
        """The project a disk this caller makes belongs to."""
        return self.project_id or NOBODY

    def __repr__(self):
        return 'Caller(%s, project=%s, user=%s)' % (
            self.kind, self.project_id, self.user_id)


def trusted():
    """The caller of imaged's own business (periodic tasks)."""
    return Caller('trusted')


def caller_of(context):
    """The :class:`Caller` the manager attached to ``context``; anonymous
    if none was (a context that never passed :meth:`Callers.identify`)."""
    return getattr(context, 'caller', None) or Caller('anonymous')


class Callers:
    """Gives each call its :class:`Caller`."""

    def __init__(self, conf, glance_api, validator=None):
        """:param validator: a :class:`imaged.identity.TokenValidator`;
        by default one on ``glance_api``'s session, as imaged's own user
        (none without Keystone)."""
        self.conf = conf
        self.validator = validator
        if self.validator is None:
            auth = glance_api.own_auth()
            if not (auth is None or isinstance(auth, noauth.NoAuth)):
                self.validator = ks_identity.TokenValidator(
                    conf, glance_api.session(), auth)
        self.keystone = self.validator is not None

    def identify(self, context, method):
        """Attach the caller to ``context`` and make its claims Keystone's.

        :raises NotAuthorized: the token is unknown to Keystone, or the
            context claims another project or user than its token's.
        :raises KeystoneUnavailable: Keystone cannot tell now.
        """
        token = getattr(context, 'auth_token', None)
        if not self.keystone:
            caller = Caller('trusted', getattr(context, 'project_id', None),
                            getattr(context, 'user_id', None))
        elif not token:
            caller = Caller(
                'trusted' if self.conf.callers.tokenless_calls_act_as_imaged
                else 'anonymous')
            # Claims without a token are nobody's.
            context.project_id = context.user_id = None
            context.roles = []
            context.is_admin = caller.privileged
        else:
            found = self.validator.validate(token,
                                            call_deadline.of(context))
            self._check_claims(context, found, method)
            caller = Caller('user', found.project_id, found.user_id,
                            found.roles)
            context.project_id = found.project_id
            context.user_id = found.user_id
            context.roles = sorted(found.roles)
            context.is_admin = 'admin' in found.roles
        context.caller = caller
        return caller

    @staticmethod
    def _check_claims(context, found, method):
        for field, claimed, real in (
                ('project_id', getattr(context, 'project_id', None),
                 found.project_id),
                ('user_id', getattr(context, 'user_id', None),
                 found.user_id)):
            if claimed and claimed != real:
                LOG.warning('%s refused: its context claims %s %s, but its '
                            'token is of %s %s (user %s)', method, field,
                            claimed, field, real, found.user_id)
                raise exception.NotAuthorized(
                    action=method,
                    reason=_('the context\'s %s is not its token\'s') %
                    field)


def check_privileged(caller, action):
    """:raises NotAuthorized: unless the caller may act on anything."""
    if not caller.privileged:
        raise exception.NotAuthorized(
            action=action,
            reason=_('it needs a token with the "admin" or "service" role'))


def check_disk_owner(caller, owner, action):
    """Whether ``caller`` may ``action`` a disk owned by ``owner``.

    :param owner: the project the disk records, ``NOBODY`` for a disk a
        tokenless call made, None for a disk made before imaged recorded
        owners.
    :returns: the project to record as the disk's owner now (an old disk
        adopted by an admin or service token), else None.
    :raises NotAuthorized: without saying whose the disk is.
    """
    if caller.privileged:
        if owner is None and caller.kind == 'user':
            return caller.project_id or NOBODY
        return None
    if owner == NOBODY:
        return None  # made by a tokenless call: anyone's
    if caller.anonymous:
        reason = _('the disk belongs to a project; the call carries no '
                   'token')
    elif owner is not None and owner == caller.project_id:
        return None
    elif owner is None:
        reason = _('the disk belongs to no project yet; a token with the '
                   '"admin" or "service" role adopts it')
    else:
        reason = _('the disk belongs to another project')
    raise exception.NotAuthorized(action=action, reason=reason)
