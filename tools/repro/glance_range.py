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

"""Evidence for issue 29: can librbd's ``http`` stream read from Glance?

``/usr/bin/python3 tools/repro/glance_range.py [MIB]`` (default 64)
against the local stack's two Glances (``ceph`` store behind
GLANCE_URL, ``file`` store behind GLANCE_FILE_URL, both behind
Keystone; read from ``$IMAGED_STACK_DIR/stack.env``). Uploads a raw image
of MIB MiB of random bytes named ``lazyrepro-range`` as the demo user,
then asks ``/v2/images/{id}/file`` what librbd's http stream asks of its
source: HEAD (the size, from Content-Length) and GET with ``Range:
bytes=a-b`` (each answer must be 206 with exactly the bytes asked for), at
the start, the middle and the end of the image, with and without a token;
times the ranged GETs (does the store seek, or read up to the offset?).
Then points ``migration_prepare_import`` at the Glance URL as librbd
would get it (no way to add a token header to its source spec) and
reports what happens. Deletes the images at the end. One JSON object per
measurement.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

STACK = os.environ.get('IMAGED_STACK_DIR', '/var/lib/imaged-stack')
MIB = 1 << 20


def out(**kw):
    print(json.dumps(kw, sort_keys=True), flush=True)


def stack_env():
    env = {}
    with open(os.path.join(STACK, 'stack.env')) as f:
        for line in f:
            if '=' in line and not line.startswith('#'):
                k, v = line.rstrip('\n').split('=', 1)
                env[k] = v
    return env


def call(method, url, token=None, headers=None, body=None, timeout=120):
    """(status, headers, body bytes, seconds to the whole answer)."""
    req = urllib.request.Request(url, data=body, method=method)
    for k, v in dict(headers or {}, **(
            {'X-Auth-Token': token} if token else {})).items():
        req.add_header(k, v)
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = resp.read()
            return resp.status, dict(resp.headers), data, \
                time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read(), time.monotonic() - t0


def token(env):
    body = {'auth': {'identity': {'methods': ['password'], 'password': {
        'user': {'name': env['DEMO_USER'], 'password': env['DEMO_PASSWORD'],
                 'domain': {'name': 'Default'}}}},
        'scope': {'project': {'name': env['DEMO_PROJECT'],
                              'domain': {'name': 'Default'}}}}}
    status, headers, _, _ = call(
        'POST', env['OS_AUTH_URL'] + '/auth/tokens',
        headers={'Content-Type': 'application/json'},
        body=json.dumps(body).encode())
    assert status == 201, status
    return headers['X-Subject-Token']


def upload(glance, tok, data, store):
    status, _, body, _ = call(
        'POST', glance + '/v2/images', tok,
        {'Content-Type': 'application/json'},
        json.dumps({'name': 'lazyrepro-range', 'disk_format': 'raw',
                    'container_format': 'bare'}).encode())
    assert status == 201, (status, body)
    image_id = json.loads(body)['id']
    headers = {'Content-Type': 'application/octet-stream'}
    if store:
        headers['X-Image-Meta-Store'] = store
    status, _, body, t = call('PUT', glance + '/v2/images/%s/file' % image_id,
                              tok, headers, data)
    assert status == 204, (status, body)
    return image_id, t


def probe(glance, store, tok, data):
    size = len(data)
    image_id, t_up = upload(glance, tok, data, store)
    url = glance + '/v2/images/%s/file' % image_id
    r = {'store': store, 'mib': size // MIB, 'upload_ms': round(t_up * 1000)}
    try:
        st, h, body, t = call('HEAD', url, tok)
        r['head'] = {'status': st, 'content_length': h.get('Content-Length'),
                     'accept_ranges': h.get('Accept-Ranges')}
        st, h, body, t = call('GET', url, tok)
        r['get_whole'] = {'status': st, 'right': body == data,
                          'ms': round(t * 1000)}
        for label, start, length in (('start_4k', 0, 4096),
                                     ('middle_4k', size // 2, 4096),
                                     ('end_4k', size - 4096, 4096),
                                     ('middle_4m', size // 2, 4 * MIB),
                                     ('end_4m', size - 4 * MIB, 4 * MIB)):
            times, res = [], None
            for _ in range(3):
                st, h, body, t = call(
                    'GET', url, tok,
                    {'Range': 'bytes=%d-%d' % (start, start + length - 1)})
                times.append(t)
                res = {'status': st, 'content_range': h.get('Content-Range'),
                       'len': len(body),
                       'right': body == data[start:start + length]}
            res['ms'] = [round(x * 1000, 1) for x in times]
            r[label] = res
        st, _, _, _ = call('GET', url, None, {'Range': 'bytes=0-4095'})
        r['range_without_token'] = st
        st, _, _, _ = call('HEAD', url, None)
        r['head_without_token'] = st
        out(**r)
        # librbd in a child: it may abort (SIGABRT) on what Glance answers
        proc = subprocess.run([sys.executable, __file__, '_prepare', url],
                              capture_output=True, text=True, timeout=300)
        out(store=store, librbd_prepare_on_glance_url=dict(
            rc=proc.returncode, stdout=proc.stdout.strip(),
            asserts=[line.strip() for line in proc.stderr.splitlines()
                     if 'FAILED' in line or 'In function' in line]))
    finally:
        call('DELETE', glance + '/v2/images/%s' % image_id, tok)


def librbd_prepare(url):
    import rados
    import rbd
    cluster = rados.Rados(
        conffile=os.path.join(STACK, 'ceph', 'ceph.conf'),
        conf={'keyring': os.path.join(STACK, 'ceph',
                                      'ceph.client.admin.keyring')})
    cluster.connect(timeout=30)
    ioctx = cluster.open_ioctx('vms')
    name = 'lazyrepro-glance-%d' % os.getpid()
    spec = json.dumps({'type': 'raw',
                       'stream': {'type': 'http', 'url': url}})
    try:
        t0 = time.monotonic()
        rbd.RBD().migration_prepare_import(spec, ioctx, name)
        result = 'prepared in %.0f ms' % ((time.monotonic() - t0) * 1000)
        try:
            with rbd.Image(ioctx, name) as image:
                image.read(0, 4096)
            result += '; read ok'
        except Exception as e:
            result += '; read: %r' % e
        rbd.RBD().migration_abort(ioctx, name)
        return result
    except Exception as e:
        return repr(e)
    finally:
        if name in rbd.RBD().list(ioctx):
            try:
                rbd.RBD().migration_abort(ioctx, name)
            except Exception:
                pass
        if name in rbd.RBD().list(ioctx):
            rbd.RBD().remove(ioctx, name)
        ioctx.close()
        cluster.shutdown()


def main(argv):
    if len(argv) > 2 and argv[1] == '_prepare':
        print(librbd_prepare(argv[2]))
        return 0
    mib = int(argv[1]) if len(argv) > 1 else 64
    env = stack_env()
    tok = token(env)
    data = os.urandom(mib * MIB)
    probe(env['GLANCE_URL'], 'ceph', tok, data)
    probe(env['GLANCE_FILE_URL'], 'local', tok, data)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
