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

"""``imaged-client``: call imaged agents over RPC and print JSON.

Uses :class:`imaged.rpcapi.ImageAgentAPI` exactly as other services do;
``precache`` fans ``cache_images`` out to many hosts
(:mod:`imaged.cmd.fleet_precache`).
"""

import argparse
import json
import os
import sys

from oslo_config import cfg
import oslo_messaging as messaging

from imaged.cmd import fleet_precache
from imaged import conf as imaged_conf
from imaged import context as imaged_context
from imaged import exception
from imaged import rpcapi
from imaged import validate

CONF = imaged_conf.CONF


def _parser():
    parser = argparse.ArgumentParser(
        prog='imaged-client',
        description='Call the imaged agent of a compute host; prints JSON.')
    parser.add_argument('--host',
                        help="The agent's [DEFAULT] host (every command "
                             "but precache).")
    parser.add_argument('--auth-token-file', metavar='PATH',
                        help='File holding the Keystone token passed to the '
                             'agent for Glance ("-": standard input). '
                             'Default: $OS_AUTH_TOKEN. Never on the command '
                             'line, where every user sees it in ps.')
    sub = parser.add_subparsers(dest='command', required=True)
    create = sub.add_parser('create-root-disk',
                            help='Create <instance>_disk from an image.')
    create.add_argument('instance_uuid')
    create.add_argument('image_id')
    create.add_argument('size_gb', type=int)
    delete = sub.add_parser('delete-root-disk',
                            help="Delete an instance's root disk.")
    delete.add_argument('instance_uuid')
    flatten = sub.add_parser(
        'flatten-root-disk',
        help="Make an instance's root disk independent of its image.")
    flatten.add_argument('instance_uuid')
    snapshot = sub.add_parser(
        'snapshot-root-disk',
        help="Fill a queued Glance image with an instance's root disk.")
    snapshot.add_argument('instance_uuid')
    snapshot.add_argument('image_id')
    sub.add_parser('list-cached', help='List the base image cache.')
    sub.add_parser('capabilities', help='Show the agent and its problems.')
    warm = sub.add_parser(
        'precache', help='Cache images on many hosts (cache_images).')
    warm.add_argument('--hosts', help='Comma-separated host names.')
    warm.add_argument('--hosts-file',
                      help='File with one host name a line (# comments).')
    warm.add_argument('--concurrency', type=int, default=4,
                      help='Hosts called at the same time (default 4).')
    warm.add_argument('--timeout', type=int,
                      help='Seconds a host may stay silent (no answer, no '
                           'heartbeat) before it is reported skipped '
                           '(default: [DEFAULT] rpc_response_timeout).')
    warm.add_argument('image_ids', nargs='+', metavar='IMAGE_ID')
    return parser


def _check_args(parser, args):
    """Refuse bad arguments (exit 2) before any call is made."""
    if args.command != 'precache':
        if not args.host:
            parser.error('%s needs --host' % args.command)
        return
    if args.concurrency < 1:
        parser.error('--concurrency must be at least 1')
    if args.timeout is not None and args.timeout < 1:
        parser.error('--timeout must be at least 1')
    try:
        args.hosts = fleet_precache.read_hosts(args.hosts, args.hosts_file)
        args.image_ids = validate.validate_image_ids(
            [i.lower() for i in args.image_ids])
    except OSError as e:
        parser.error('cannot read --hosts-file: %s' % e)
    except exception.InvalidInput as e:
        parser.error(str(e))
    if not args.hosts:
        parser.error('precache needs host names (--hosts or --hosts-file)')


def _precache(api, ctxt, args):
    if args.timeout is not None:
        CONF.set_override('rpc_response_timeout', args.timeout)
    return fleet_precache.run(api, ctxt, args.hosts, args.image_ids,
                              args.concurrency, sys.stdout, sys.stderr)


def run(api, ctxt, args):
    if args.command == 'create-root-disk':
        return api.create_root_disk(ctxt, args.host, args.instance_uuid,
                                    args.image_id, args.size_gb)
    if args.command == 'delete-root-disk':
        api.delete_root_disk(ctxt, args.host, args.instance_uuid)
        return {'deleted': args.instance_uuid}
    if args.command == 'flatten-root-disk':
        return api.flatten_root_disk(ctxt, args.host, args.instance_uuid)
    if args.command == 'snapshot-root-disk':
        return api.snapshot_root_disk(ctxt, args.host, args.instance_uuid,
                                      args.image_id)
    if args.command == 'list-cached':
        return api.list_cached_images(ctxt, args.host)
    return api.get_capabilities(ctxt, args.host)


# The RPC method each command calls (precache: cache_images on many hosts).
COMMANDS = {'create-root-disk': 'create_root_disk',
            'delete-root-disk': 'delete_root_disk',
            'flatten-root-disk': 'flatten_root_disk',
            'snapshot-root-disk': 'snapshot_root_disk',
            'list-cached': 'list_cached_images',
            'capabilities': 'get_capabilities',
            'precache': 'cache_images'}


def _auth_token(path):
    """The caller's token: from ``path`` ("-": stdin), else $OS_AUTH_TOKEN.
    """
    if path == '-':
        token = sys.stdin.readline()
    elif path:
        with open(path, encoding='ascii') as f:
            token = f.readline()
    else:
        token = os.environ.get('OS_AUTH_TOKEN', '')
    return token.strip() or None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # oslo.config takes --config-file/--config-dir; argparse the rest.
    known, rest = [], []
    it = iter(argv)
    for arg in it:
        if arg in ('--config-file', '--config-dir'):
            known += [arg, next(it, '')]
        elif arg.startswith(('--config-file=', '--config-dir=')):
            known.append(arg)
        else:
            rest.append(arg)
    parser = _parser()
    args = parser.parse_args(rest)
    _check_args(parser, args)
    CONF(known, project='imaged')
    try:
        token = _auth_token(args.auth_token_file)
    except OSError as e:
        parser.error('cannot read --auth-token-file: %s' % e)
    ctxt = imaged_context.RequestContext(auth_token=token)
    try:
        api = rpcapi.ImageAgentAPI(CONF)
        if args.command == 'precache':
            return _precache(api, ctxt, args)
        result = run(api, ctxt, args)
    except exception.ImagedException as e:
        # oslo.messaging rebuilds remote errors as "<Class>_Remote".
        name = type(e).__name__.removesuffix('_Remote')
        # The message comes first; the agent's traceback follows it.
        message = str(e).split('\n', 1)[0]
        print(json.dumps({'error': name, 'message': message}),
              file=sys.stderr)
        return 1
    except (messaging.MessagingException, cfg.Error) as e:
        print(json.dumps({'error': type(e).__name__, 'message': str(e)}),
              file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == '__main__':
    sys.exit(main())
