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

"""``imaged-client precache``: warm many hosts' caches before a launch.

Calls ``cache_images`` on each host, a few hosts at a time. On a terminal it
shows a progress bar (rich) and ends with a table of every host and image;
otherwise it prints one JSON line per host as each one answers, and the
table on stderr. A host that does not answer in time is ``skipped``, as nova
says; the exit status is 1 when any image on any host is not ready.
"""

from concurrent import futures
import json

import oslo_messaging as messaging
from rich import console as rich_console
from rich import progress as rich_progress
from rich import table as rich_table

from imaged import exception

READY = ('cached', 'existing')
SKIPPED = 'skipped'


def read_hosts(hosts=None, hosts_file=None):
    """Host names from ``H1,H2`` and/or a file (one a line, # comments)."""
    names = []
    if hosts:
        names += hosts.split(',')
    if hosts_file:
        with open(hosts_file) as f:
            names += [line.split('#', 1)[0] for line in f]
    seen, result = set(), []
    for name in (n.strip() for n in names):
        if name and name not in seen:
            seen.add(name)
            result.append(name)
    return result


def _error(e):
    # oslo.messaging rebuilds remote errors as "<Class>_Remote", with the
    # agent's traceback after the first line.
    return {'class': type(e).__name__.removesuffix('_Remote'),
            'message': str(e).split('\n', 1)[0]}


def precache_host(api, ctxt, host, image_ids):
    """One host's answer: ``{'host', 'result', 'images', 'error'}``.

    ``result`` is ``ok`` (every image ready), ``failed`` or ``skipped``.
    """
    try:
        images = api.cache_images(ctxt, host, image_ids)
    except messaging.MessagingTimeout:
        error = {'class': 'MessagingTimeout',
                 'message': 'no answer and no heartbeat in time'}
        return {'host': host, 'result': SKIPPED, 'error': error,
                'images': {i: SKIPPED for i in image_ids}}
    except (exception.ImagedException, messaging.MessagingException) as e:
        return {'host': host, 'result': 'failed', 'error': _error(e),
                'images': {i: 'error' for i in image_ids}}
    ready = all(images.get(i) in READY for i in image_ids)
    return {'host': host, 'result': 'ok' if ready else 'failed',
            'error': None, 'images': images}


def fan_out(api, ctxt, hosts, image_ids, concurrency, on_answer):
    """Every host's answer, in ``hosts`` order; ``on_answer(answer)`` is
    called as each one arrives."""
    answers = {}
    with futures.ThreadPoolExecutor(max_workers=concurrency,
                                    thread_name_prefix='precache') as pool:
        jobs = {pool.submit(precache_host, api, ctxt, host, image_ids): host
                for host in hosts}
        for job in futures.as_completed(jobs):
            answer = job.result()
            answers[jobs[job]] = answer
            on_answer(answer)
    return [answers[host] for host in hosts]


def table(answers, image_ids):
    out = rich_table.Table(title='cache_images')
    out.add_column('host', overflow='fold')
    out.add_column('image', no_wrap=True, min_width=36)  # a whole UUID
    out.add_column('status', no_wrap=True)
    out.add_column('error')
    for answer in answers:
        error = answer['error']
        for i, image_id in enumerate(image_ids):
            first = i == 0  # the host and its error once
            out.add_row(answer['host'] if first else '', image_id,
                        answer['images'].get(image_id, 'error'),
                        '%(class)s: %(message)s' % error
                        if error and first else '')
    return out


def run(api, ctxt, hosts, image_ids, concurrency, stdout, stderr):
    """Precache ``image_ids`` on ``hosts``; returns the exit status."""
    interactive = stderr.isatty()
    err_console = rich_console.Console(file=stderr)
    if interactive:
        bar = rich_progress.Progress(
            rich_progress.TextColumn('precache'),
            rich_progress.BarColumn(),
            rich_progress.MofNCompleteColumn(),
            rich_progress.TextColumn('{task.fields[last]}'),
            rich_progress.TimeElapsedColumn(),
            console=err_console, transient=True)
        task = bar.add_task('hosts', total=len(hosts), last='')

        def on_answer(answer):
            bar.update(task, advance=1,
                       last='%s %s' % (answer['host'], answer['result']))
        with bar:
            answers = fan_out(api, ctxt, hosts, image_ids, concurrency,
                              on_answer)
        rich_console.Console(file=stdout).print(table(answers, image_ids))
    else:
        def on_answer(answer):
            stdout.write(json.dumps(answer, sort_keys=True) + '\n')
            stdout.flush()
        answers = fan_out(api, ctxt, hosts, image_ids, concurrency,
                          on_answer)
        err_console.print(table(answers, image_ids))
    return 0 if all(a['result'] == 'ok' for a in answers) else 1
