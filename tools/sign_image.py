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

"""Sign an image as Glance's docs describe, and upload it signed.

Makes an RSA key pair and a self-signed X.509 certificate (a CA, so that
it may stand as its own trusted certificate), stores the certificate in
Barbican (as a ``certificate`` secret, PEM, with a Keystone token), signs
the image's bytes with RSA-PSS over SHA-256 (what ``openssl dgst -sha256
-sign key.pem -sigopt rsa_padding_mode:pss`` makes) and uploads the image to
Glance with the ``img_signature*`` properties: Glance itself verifies the
signature on upload when it is configured with a key manager.

    tools/sign-image.py IMAGE_FILE [--store ceph|local] [--name NAME]
        [--key KEY.pem --certificate-id UUID] [--properties-after-upload]

With no credentials in the environment (``OS_AUTH_URL``...), the stack's
demo user (tools/stack.sh env) is used. Prints the image's and the
certificate's ids as JSON.
"""

import argparse
import base64
import datetime
import json
import os
import sys
import uuid

from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric import utils
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from cryptography.x509.oid import NameOID

CHUNK = 4 * 1024 * 1024
HASH_METHOD = 'SHA-256'
KEY_TYPE = 'RSA-PSS'


def make_key_and_certificate(common_name='imaged test signing key',
                             key_size=2048, days=365):
    """``(private key, certificate)``: a self-signed CA certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                       critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256()))
    return key, certificate


def store_certificate(session, barbican_url, certificate, name=None):
    """The Barbican secret id of ``certificate`` (stored with the
    session's token, in its project).

    Barbican keeps certificates as PEM: castellan (which nova, Glance and
    imaged read them with) turns them into DER.
    """
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    resp = session.post(
        '%s/v1/secrets' % barbican_url.rstrip('/'),
        json={'name': name or 'imaged-signing-%s' % uuid.uuid4().hex[:8],
              'secret_type': 'certificate', 'algorithm': 'RSA',
              'payload': base64.b64encode(pem).decode(),
              'payload_content_type': 'application/octet-stream',
              'payload_content_encoding': 'base64'},
        raise_exc=True)
    return resp.json()['secret_ref'].rstrip('/').rsplit('/', 1)[1]


def sign_chunks(key, chunks):
    """The base64 RSA-PSS (SHA-256, MGF1, longest salt) signature of the
    bytes ``chunks`` yield."""
    digest = hashes.Hash(hashes.SHA256())
    for chunk in chunks:
        digest.update(chunk)
    signature = key.sign(
        digest.finalize(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                    salt_length=padding.PSS.MAX_LENGTH),
        utils.Prehashed(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def signature_properties(signature, certificate_id):
    return {'img_signature': signature,
            'img_signature_hash_method': HASH_METHOD,
            'img_signature_key_type': KEY_TYPE,
            'img_signature_certificate_uuid': certificate_id}


def _file_chunks(path):
    with open(path, 'rb') as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _session(args):
    from keystoneauth1.identity import v3
    from keystoneauth1 import session as ks_session
    env = dict(os.environ)
    if not env.get('OS_AUTH_URL'):
        stack_env = os.path.join(os.environ.get('IMAGED_STACK_DIR',
                                                '/var/lib/imaged-stack'),
                                 'stack.env')
        with open(stack_env) as f:
            stack = dict(line.strip().split('=', 1) for line in f
                         if '=' in line and not line.startswith('#'))
        env.update(OS_AUTH_URL=stack['OS_AUTH_URL'],
                   OS_USERNAME=stack['DEMO_USER'],
                   OS_PASSWORD=stack['DEMO_PASSWORD'],
                   OS_PROJECT_NAME=stack['DEMO_PROJECT'],
                   BARBICAN_URL=stack.get('BARBICAN_URL', ''),
                   GLANCE_URL=stack['GLANCE_URL'])
    auth = v3.Password(auth_url=env['OS_AUTH_URL'],
                       username=env['OS_USERNAME'],
                       password=env['OS_PASSWORD'],
                       project_name=env['OS_PROJECT_NAME'],
                       user_domain_name=env.get('OS_USER_DOMAIN_NAME',
                                                'Default'),
                       project_domain_name=env.get('OS_PROJECT_DOMAIN_NAME',
                                                   'Default'))
    session = ks_session.Session(auth=auth, timeout=60)
    barbican = args.barbican_url or env.get('BARBICAN_URL') or \
        session.get_endpoint(service_type='key-manager', interface='public')
    glance = args.glance_url or env.get('GLANCE_URL') or \
        session.get_endpoint(service_type='image', interface='public')
    return session, barbican, glance


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('image_file')
    parser.add_argument('--name', default=None)
    parser.add_argument('--disk-format', default='raw')
    parser.add_argument('--store', default=None,
                        help="Glance store (enabled_backends name)")
    parser.add_argument('--key', help='PEM private key to sign with (with '
                        '--certificate-id); default: a new key pair, '
                        'written to --out-dir')
    parser.add_argument('--certificate-id')
    parser.add_argument('--out-dir', default='.')
    parser.add_argument('--properties-after-upload', action='store_true',
                        help='add the signature properties once the data '
                        'is uploaded (Glance then does not verify it)')
    parser.add_argument('--barbican-url')
    parser.add_argument('--glance-url')
    args = parser.parse_args(argv)
    from glanceclient import client as glance_client
    session, barbican_url, glance_url = _session(args)
    if args.key:
        if not args.certificate_id:
            parser.error('--key needs --certificate-id')
        with open(args.key, 'rb') as f:
            key = serialization.load_pem_private_key(f.read(), None)
        certificate_id = args.certificate_id
    else:
        # Where the new key goes must exist before Barbican holds anything.
        os.makedirs(args.out_dir, mode=0o700, exist_ok=True)
        key, certificate = make_key_and_certificate()
        certificate_id = store_certificate(session, barbican_url,
                                           certificate)
        path = os.path.join(args.out_dir, 'signing-key-%s.pem' %
                            certificate_id)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600),
                  'wb') as f:
            f.write(key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
    props = signature_properties(
        sign_chunks(key, _file_chunks(args.image_file)), certificate_id)
    glance = glance_client.Client('2', endpoint=glance_url, session=session)
    image = glance.images.create(
        name=args.name or os.path.basename(args.image_file),
        disk_format=args.disk_format, container_format='bare',
        **({} if args.properties_after_upload else props))
    try:
        with open(args.image_file, 'rb') as f:
            glance.images.upload(image['id'], f,
                                 image_size=os.path.getsize(args.image_file),
                                 backend=args.store)
        if args.properties_after_upload:
            glance.images.update(image['id'], **props)
    except BaseException:
        glance.images.delete(image['id'])  # nothing left half-made
        raise
    json.dump({'image_id': image['id'], 'certificate_id': certificate_id},
              sys.stdout)
    print()
    return 0


if __name__ == '__main__':
    sys.exit(main())
