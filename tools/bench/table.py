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

"""The report as the table the benchmark prints."""

from tools.bench.figures import Figure
from tools.bench.sizes import GiB


def number(value, unit):
    if value is None:
        return '-'
    if unit == 's':
        return '%.3f s' % value if value < 10 else '%.1f s' % value
    if unit == 'calls/s':
        return '%.0f/s' % value
    if unit == 'MiB':
        return '%.0f MiB' % value
    return '%g' % value


CLUSTERS = {'memstore': 'the fast cluster: one OSD on memstore (RAM)',
            'bluestore': 'one OSD on a BlueStore file on this machine'}


def table(report, figures):
    """The report's table; ``figures`` None: those of its JSON."""
    if figures is None:
        figures = [Figure.from_dict(f) for f in report['figures']]
    m, src = report['machine'], report['imaged']
    cluster = report.get('cluster', {})
    store = cluster.get('objectstore', 'bluestore')
    lines = [
        'imaged benchmark, %s, %s configuration, median of %d '
        'repetitions' % (report['date'], report['configuration'],
                         report['repetitions']),
        'machine: %d CPUs (%s), %.1f GiB RAM, Linux %s' % (
            m['nproc'], m['cpu_model'], m['mem_total_bytes'] / GiB,
            m['kernel']),
        'imaged: %s at %s%s' % (src['tree'], src['commit'],
                                ' + uncommitted changes in imaged/'
                                if src['uncommitted'] else ''),
        'Ceph: %s (stack %s)' % (CLUSTERS.get(store, store),
                                 cluster.get('stack_dir', '?')),
        '']
    rows = [('#', 'figure', 'imaged', 'baseline', 'ratio', 'target',
             'result')]
    for f in figures:
        rows.append((str(f.section), f.title, number(f.value, f.unit),
                     '%s %s' % (number(f.baseline, f.unit),
                                f.baseline_label),
                     '%.2fx' % f.ratio if f.ratio is not None else '-',
                     f.target.text if f.target else '(report only)',
                     {True: 'met', False: 'MISSED', None: '-'}[f.met]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        lines.append('  '.join(c.ljust(w) for c, w in zip(row, widths))
                     .rstrip())
        if i == 0:
            lines.append('  '.join('-' * w for w in widths))
    notes = ['%s: %s' % (f.title, ', '.join(sorted(set(f.notes))))
             for f in figures if f.notes]
    notes += ['%s: %s (%s)' % ('redone' if r.get('stack') else
                               'retried once', r['what'], r['error'])
              for r in report['retries']]
    notes += ['FAILED: %s (%s)' % (e['what'], e['error'])
              for e in report['errors']]
    notes += ['skipped %s: %s' % (s['section'], s['reason'])
              for s in report['skipped']]
    notes += ['not removed: %s' % ', '.join(report['not_removed'])] \
        if report['not_removed'] else []
    met = [f.met for f in figures if f.met is not None]
    return '\n'.join(lines + ([''] + notes if notes else []) + [
        '', 'targets met: %d of %d; took %.0f s' % (
            sum(met), len(met), report['duration_s'])])
