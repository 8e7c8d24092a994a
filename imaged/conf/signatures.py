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

"""Image signature options: nova's, in ``[glance]``, and castellan's.

The names and meanings are nova's (``[glance] verify_glance_signatures``,
``enable_certificate_validation``, ``default_trusted_certificate_ids``), so
a deployment that turned verification on in nova keeps it when root disks
move to imaged. The signing certificate is read from the key manager that
castellan's own ``[key_manager]`` and ``[barbican]`` groups configure, with
the caller's token.
"""

from castellan import options as castellan_opts
from oslo_config import cfg

signature_opts = [
    cfg.BoolOpt(
        'verify_glance_signatures',
        default=False,
        help="""
Verify the signature of every image a root disk is made from.

Glance keeps an image's signature in its properties (``img_signature``,
``img_signature_hash_method``, ``img_signature_key_type``,
``img_signature_certificate_uuid``) and the signing certificate in the key
manager. With this option on, an image without a complete signature is
refused, and a signed one is verified: while it downloads, over the same
single pass that hashes it (a second hash of the stream), before its base
is kept; when it is cloned from Glance's RBD snapshot, by one read of the
snapshot per image per pool, whose result every host of the pool finds (a
later clone costs one lookup in Ceph). A signature that does not match
refuses the image: nothing is cached, no disk is made.

Related options:

* The ``[key_manager]`` and ``[barbican]`` groups: where the certificate is
  read.
* ``enable_certificate_validation`` and ``default_trusted_certificate_ids``
  depend on this option.
"""),
    cfg.BoolOpt(
        'enable_certificate_validation',
        default=False,
        help="""
Validate the signing certificate of an image against trusted certificates.

Before it verifies the signature, imaged checks that the signing
certificate chains to one of the trusted certificates (the call's, else
``default_trusted_certificate_ids``), is within its dates and may sign. If
no trusted certificate is given, the image is refused. Trusted certificates
given by a call are always used, whatever this option says (as in nova).

Related options:

* Takes effect only with ``verify_glance_signatures`` on.
* ``default_trusted_certificate_ids``
"""),
    cfg.ListOpt(
        'default_trusted_certificate_ids',
        default=[],
        help="""
IDs in the key manager of the certificates trusted when a call gives none.

Ignored when a call gives its own list of trusted certificate IDs. If left
empty while ``enable_certificate_validation`` is on, calls must give their
own list, or their images are refused.

Related options:

* Used when both ``verify_glance_signatures`` and
  ``enable_certificate_validation`` are on.
"""),
    cfg.IntOpt(
        'certificate_cache_seconds',
        default=60,
        min=0,
        help="""
Seconds a certificate read from the key manager is kept by the agent.

Reading one certificate from Barbican takes a Keystone token exchange and
two requests (0.3 to 3 seconds on a busy stack), for every call that
verifies a signed image and for each of its trusted certificates. Kept for
this long, a boot storm of one image reads it once. A certificate is
public and a signature still has to verify against it; what this delays
is the effect of deleting a certificate from the key manager. 0: read it
for every call, as nova does.

Related options:

* ``verify_glance_signatures``
"""),
]


def register_opts(conf):
    conf.register_opts(signature_opts, group='glance')
    # castellan's [key_manager], [barbican]... groups, as nova registers
    # them; its backend stays castellan's default (barbican).
    castellan_opts.set_defaults(conf)


def list_opts():
    opts = {'glance': signature_opts}
    for group, options in castellan_opts.list_opts():
        opts[group] = list(options)
    return opts
