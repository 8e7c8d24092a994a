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

"""``python -m tools.bench``: parse the options, run, write the report."""

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

from tests.functional import base
import tools.bench
from tools.bench.baselines import serve_echo
from tools.bench.config import FULL
from tools.bench.config import QUICK
from tools.bench.config import REPO
from tools.bench.harness import Bench
from tools.bench.harness import NOT_QUICK
from tools.bench.harness import SECTIONS
from tools.bench.machine import machine_facts
from tools.bench.machine import source_facts
from tools.bench.plot import draw_plot
from tools.bench.progress import describe
from tools.bench.progress import log
from tools.bench.progress import STARTED
from tools.bench.table import table


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m tools.bench',
        description=tools.bench.__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes and 1 repetition (CI: < 60 s)')
    parser.add_argument('--repetitions', '--repeat', '-n', type=int,
                        help='samples per figure (full: 3, quick: 1); with '
                        '--only storm, the storm runs (each counts its '
                        'deaths)')
    parser.add_argument('--storm', metavar='AGENTSxCALLERS[,...]',
                        help='the storms to run (default 6x8,6x16; quick '
                        '2x4), e.g. 6x16,12x16')
    parser.add_argument('--lazy-plain-base', action='store_true',
                        help='the lazy agents of sections lazy and '
                        'lazy_storm with [image_cache] lazy_plain_base')
    parser.add_argument('--lazy-sizes', metavar='MiB[,...]',
                        help='the image sizes of section lazy (default '
                        '256,1024,4096; quick 8,32), e.g. 4096 alone on a '
                        'fast cluster with room for one such size')
    parser.add_argument('--only',
                        help='comma-separated sections to run, of: %s '
                        '(default: all; with --quick, all but %s)' % (
                            ', '.join(SECTIONS), ', '.join(NOT_QUICK)))
    parser.add_argument('--json', default='bench-results/bench.json',
                        help='where to write the raw figures')
    parser.add_argument('--plot', default='bench-results/bench.png',
                        help='where to draw the plot')
    parser.add_argument('--imaged-tree', metavar='DIR',
                        help='run the daemon from this source tree (e.g. a '
                        'git worktree of another commit)')
    parser.add_argument('--fast-stack', metavar='STACK_DIR',
                        help='then run every section again against the '
                        'stack in STACK_DIR (one made with '
                        'IMAGED_STACK_CEPH_OBJECTSTORE=memstore: the fast '
                        'cluster) and print its table too')
    parser.add_argument('--serve-echo', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fast_stack and not os.path.exists(
            os.path.join(args.fast_stack, 'stack.env')):
        parser.error('%s/stack.env is missing: start that stack first '
                     '(IMAGED_STACK_DIR=%s tools/stack.sh start)' % (
                         args.fast_stack, args.fast_stack))
    if args.only is None:
        args.only = ','.join(s for s in SECTIONS
                             if not (args.quick and s in NOT_QUICK))
    unknown = set(args.only.split(',')) - set(SECTIONS)
    if unknown:
        parser.error('unknown sections: %s' % ', '.join(sorted(unknown)))
    if args.repetitions is not None and args.repetitions < 1:
        parser.error('--repetitions must be at least 1')
    if args.storm:
        try:
            args.storm = tuple(tuple(int(n) for n in shape.split('x'))
                               for shape in args.storm.split(','))
            if any(len(s) != 2 or min(s) < 1 for s in args.storm):
                raise ValueError
        except ValueError:
            parser.error('--storm takes AGENTSxCALLERS[,...], e.g. 6x16')
    if args.lazy_sizes:
        try:
            args.lazy_sizes = tuple(int(n) * 1024 * 1024
                                    for n in args.lazy_sizes.split(','))
            if min(args.lazy_sizes) < 1:
                raise ValueError
        except ValueError:
            parser.error('--lazy-sizes takes MiB[,...], e.g. 256,1024')
    return args


def beside(path, suffix):
    """``bench-results/bench.json`` -> ``bench-results/bench-fast.json``.
    """
    stem, ext = os.path.splitext(path)
    return stem + suffix + ext


def run_on_fast_stack(argv, args):
    """The same run, in a child process bound to ``--fast-stack``'s
    stack (the stack's directory is read once, at import).

    :returns: the child's exit code and its report (None if it wrote none).
    """
    json_path = beside(args.json, '-fast')
    argv = [a for i, a in enumerate(argv) if a != '--fast-stack' and
            not a.startswith('--fast-stack=') and
            (i == 0 or argv[i - 1] != '--fast-stack')]
    argv += ['--json', json_path, '--plot', beside(args.plot, '-fast')]
    log('the same sections on the fast cluster (%s)', args.fast_stack)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(json_path)
    # Its progress goes to stderr as ours does; its table is printed here.
    rc = subprocess.run(
        [sys.executable, '-m', 'tools.bench'] + argv, cwd=REPO,
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, IMAGED_STACK_DIR=args.fast_stack)).returncode
    try:
        with open(json_path) as f:
            return rc, json.load(f)
    except (OSError, ValueError):
        return rc, None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.serve_echo:
        return serve_echo(*args.serve_echo)
    rc = run(args)
    if not args.fast_stack:
        return rc
    fast_rc, fast = run_on_fast_stack(argv, args)
    if fast is None:
        print('\nno figures from the fast cluster (exit status %d)' %
              fast_rc)
    else:
        print('\n' + table(fast, None))
        print('\nraw figures: %s' % beside(args.json, '-fast'))
    return rc or fast_rc


def run(args):
    config = dataclasses.replace(QUICK if args.quick else FULL)
    config.repetitions = args.repetitions or config.repetitions
    if args.storm:
        config.storm_shapes = args.storm
    if args.lazy_sizes:
        config.lazy_sizes = args.lazy_sizes
    config.lazy_plain_base = args.lazy_plain_base
    tree = os.path.abspath(args.imaged_tree or REPO)
    if args.imaged_tree:
        os.environ['PYTHONPATH'] = os.pathsep.join(
            [tree] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    # SIGTERM ends the run as Ctrl-C does: the cleanup still runs, and
    # what was measured until then is reported.
    signal.signal(signal.SIGTERM, lambda *_a: sys.exit(143))
    run_id = uuid.uuid4().hex[:8]
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')
    source = source_facts(tree)
    base.configure_client()
    base.CONF.set_override('long_rpc_timeout', config.call_timeout)
    for path in (args.json, args.plot):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix='imaged-bench-', dir='/var/tmp')
    bench, left, interrupted = None, [], None
    try:
        bench = Bench(config, workdir, run_id)
        bench.run(args.only.split(','))
    except (KeyboardInterrupt, SystemExit) as e:
        interrupted = 130 if isinstance(e, KeyboardInterrupt) else e.code
        log('interrupted: cleaning up, then the figures measured so far')
        if bench is None:
            return interrupted
        bench.errors.append({'what': 'run', 'error': 'interrupted'})
    except Exception as e:
        log('the benchmark could not run: %s', describe(e))
        traceback.print_exc()
        if bench is None:
            return 1
        bench.errors.append({'what': 'setup', 'error': describe(e),
                             'traceback': traceback.format_exc()})
    finally:
        if bench is not None:
            left = bench.cleanup()
            for name, suffix in (('imaged.log', '-imaged.log'),
                                 ('stderr.log', '-imaged-stderr.log')):
                with contextlib.suppress(OSError):  # for a post mortem
                    shutil.copy(os.path.join(bench.agent.daemon.workdir,
                                             name),
                                os.path.splitext(args.json)[0] + suffix)
        shutil.rmtree(workdir, ignore_errors=True)
    figures = sorted(bench.figures.values(), key=lambda f: f.section)
    report = {
        'date': date, 'machine': machine_facts(),
        'imaged': source,
        'configuration': 'quick' if args.quick else 'full',
        'cluster': {'stack_dir': base.STACK_DIR,
                    'objectstore': base.stack().get('CEPH_OBJECTSTORE',
                                                    'bluestore')},
        'repetitions': config.repetitions,
        'config': dataclasses.asdict(config),
        'sections': args.only.split(','),
        'duration_s': time.monotonic() - STARTED,
        'figures': [f.as_dict() for f in figures],
        'series': {name: {str(size): values
                          for size, values in points.items()}
                   for name, points in bench.series.items()},
        'retries': bench.retries, 'errors': bench.errors,
        'skipped': bench.skipped, 'not_removed': left,
        'glance_images': sorted(bench.glance.created),
        'instances': sorted(bench.instances)}
    with open(args.json, 'w') as f:
        json.dump(report, f, indent=1)
    plotted = draw_plot(report, args.plot)
    print(table(report, figures))
    print('\nraw figures: %s%s' % (
        args.json, '; plot: %s' % args.plot if plotted else ''))
    if interrupted is not None:
        return interrupted
    return 1 if bench.errors else 0


if __name__ == '__main__':
    sys.exit(main())
