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

"""The plot of time and memory against image size."""

import statistics

from tools.bench.progress import log
from tools.bench.sizes import MiB
from tools.bench.sizes import size_text


def draw_plot(report, path):
    try:
        import matplotlib
        matplotlib.use('Agg')
        from matplotlib import pyplot
    except ImportError:
        log('matplotlib is missing (pip install -r bench-requirements.txt): '
            'no plot')
        return False
    colours = {'clone': 'tab:blue', 'download, first': 'tab:orange',
               'download:': 'tab:orange', 'download, second': 'tab:green',
               'sparse': 'tab:purple', 'qcow2': 'tab:brown'}
    fig, (times, memory) = pyplot.subplots(
        1, 2, figsize=(13, 5.5), gridspec_kw={'width_ratios': [2, 1]})
    for name, points in sorted(report['series'].items()):
        sizes = sorted(points, key=int)
        mib = [int(s) / MiB for s in sizes]
        values = [statistics.median(points[s]) for s in sizes]
        if name.startswith('peak RSS'):
            memory.plot(mib, [v / MiB for v in values], 'o-', label=name)
            continue
        baseline = 'baseline' in name
        times.plot(mib, values, 'o--' if baseline else 'o-',
                   color=next((c for k, c in colours.items()
                               if name.startswith(k)), None),
                   alpha=0.6 if baseline else 1.0, label=name)
    for axes, memory_only in ((times, False), (memory, True)):
        sizes = sorted({int(size) for name, points in report['series'].items()
                        if name.startswith('peak RSS') or not memory_only
                        for size in points})
        axes.set_xscale('log', base=2)
        axes.set_xticks([s / MiB for s in sizes], [size_text(s)
                                                   for s in sizes])
        axes.minorticks_off()
        axes.set_xlabel('image size (virtual, for sparse and qcow2)')
        axes.grid(True, alpha=0.3)
    times.set_yscale('log')
    times.yaxis.set_major_formatter('{x:g} s')
    times.set_ylabel('median')
    times.set_title('time against image size')
    times.legend(fontsize=7)
    memory.axhline(150, color='red', linestyle=':', label='target')
    memory.set_ylabel('MiB')
    memory.set_title("worker's peak RSS, first disk by download")
    memory.legend(fontsize=7)
    fig.suptitle('imaged benchmark, %s, %s, %d CPUs (%s)' % (
        report['date'], report['configuration'], report['machine']['nproc'],
        report['machine']['cpu_model']), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)
    return True
