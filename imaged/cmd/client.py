"""``imaged-client``: call an imaged agent over RPC and print JSON.

Uses :class:`imaged.rpcapi.ImageAgentAPI` exactly as other services do.
"""

import argparse
import json
import sys

from oslo_config import cfg
import oslo_messaging as messaging

from imaged import conf as imaged_conf
from imaged import context as imaged_context
from imaged import exception
from imaged import rpcapi

CONF = imaged_conf.CONF


def _parser():
    parser = argparse.ArgumentParser(
        prog='imaged-client',
        description='Call the imaged agent of a compute host; prints JSON.')
    parser.add_argument('--host', required=True,
                        help="The agent's [DEFAULT] host.")
    parser.add_argument('--auth-token',
                        help='Keystone token passed to the agent for Glance.')
    sub = parser.add_subparsers(dest='command', required=True)
    create = sub.add_parser('create-root-disk',
                            help='Create <instance>_disk from an image.')
    create.add_argument('instance_uuid')
    create.add_argument('image_id')
    create.add_argument('size_gb', type=int)
    delete = sub.add_parser('delete-root-disk',
                            help="Delete an instance's root disk.")
    delete.add_argument('instance_uuid')
    sub.add_parser('list-cached', help='List the base image cache.')
    sub.add_parser('capabilities', help='Show the agent and its problems.')
    return parser


def run(api, ctxt, args):
    if args.command == 'create-root-disk':
        return api.create_root_disk(ctxt, args.host, args.instance_uuid,
                                    args.image_id, args.size_gb)
    if args.command == 'delete-root-disk':
        api.delete_root_disk(ctxt, args.host, args.instance_uuid)
        return {'deleted': args.instance_uuid}
    if args.command == 'list-cached':
        return api.list_cached_images(ctxt, args.host)
    return api.get_capabilities(ctxt, args.host)


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
    args = _parser().parse_args(rest)
    CONF(known, project='imaged')
    ctxt = imaged_context.RequestContext(auth_token=args.auth_token)
    try:
        result = run(rpcapi.ImageAgentAPI(CONF), ctxt, args)
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
