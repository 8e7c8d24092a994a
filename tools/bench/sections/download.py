"""Section 2: a disk made by download, first and second, against the naive
way; ``sample`` also serves the sparse and qcow2 sections."""

from tools.bench.baselines import naive_create
from tools.bench.figures import Target
from tools.bench.image_data import ImageData
from tools.bench.progress import log
from tools.bench.sections import alternate
from tools.bench.sections import memory
from tools.bench.sizes import disk_gb, size_text


def measure(bench):
    for size in bench.config.download_sizes:
        text = size_text(size)
        bench.ensure_room(3 * size, 3 * size, 'download %s' % text)
        first = bench.figure(
            2, 'download-%d' % size, 'download %s, first disk' % text,
            's', 'naive: download, rbd import',
            Target('<=', 1 / 1.5, '<= 0.67x (1.5x faster)'))
        hit = bench.figure(
            2, 'cache-hit-%d' % size, 'download %s, second disk' % text,
            's', 'imaged, first disk',
            Target('<=', 1 / 5, '<= 0.2x (5x faster)'))
        for rep in range(bench.config.repetitions):
            out = bench.attempt(
                'download %s rep %d' % (text, rep + 1),
                lambda: sample(
                    bench, 'download %s' % text, lambda: ImageData(size),
                    size, rep, second=True))
            first.samples.append(out['first'])
            first.baseline_samples.append(out['naive'])
            hit.samples.append(out['second'])
            hit.baseline_samples.append(out['first'])
            hit.notes.append('second disk by %s' % out['second_strategy'])
            memory.record(bench, size, out['memory'])
            bench.plot_point('download, first disk (imaged)', size,
                             out['first'])
            bench.plot_point('download, second disk (imaged)', size,
                             out['second'])
            bench.plot_point('download: naive (baseline)', size,
                             out['naive'])


def sample(bench, what, data, size, rep, disk_format='raw', second=False):
    """One fresh image: imaged's first (and second) disk, the naive way.

    :returns: dict of seconds and the first call's memory figures.
    """
    size_gb, out = disk_gb(size), {}
    with bench.fresh_image(data, disk_format) as image, \
            bench.disks() as made:
        def by_imaged():
            out['first'], _res, out['memory'] = made.create(image['id'],
                                                            size_gb)
            if second:
                out['second'], res, _mem = made.create(image['id'],
                                                       size_gb)
                out['second_strategy'] = res['strategy']

        def naive():
            out['naive'] = naive_create(bench, made, image['id'], size_gb,
                                        disk_format)
        alternate(rep, by_imaged, naive)
    log('%s rep %d: %s', what, rep + 1, ', '.join(
        '%s %.2fs' % (k, v) for k, v in out.items()
        if isinstance(v, float)))
    return out
