"""ferryman-bench policy: three convergence policies over one matrix of guests, on
the simulator, side by side in one run. Prints figures; asserts nothing."""

import json
import statistics

from compute_agent.virt import simulation
from conductor import policy as policy_mod
from ferryman.common import vocabulary as vocab

GIB_MB = 1024.0
MIBPS_PER_GBIT = 1e9 / 8 / (1024 * 1024)

MEMORY_GIB = (1, 4, 16, 64)
BANDWIDTH_GBIT = (1, 10, 25)
DIRTY_FRACTIONS = (0.0, 0.05, 0.25, 0.5, 0.9, 1.2, 2.0)  # of the bandwidth


def matrix():
    for memory in MEMORY_GIB:
        for gbit in BANDWIDTH_GBIT:
            for fraction in DIRTY_FRACTIONS:
                for sla_class in policy_mod.SLA_CLASSES:
                    yield {'memory_mb': memory * GIB_MB,
                           'bandwidth_mibps': gbit * MIBPS_PER_GBIT,
                           'dirty_rate_mibps': fraction * gbit * MIBPS_PER_GBIT,
                           'dirty_fraction': fraction, 'sla_class': sla_class,
                           'importance': 'medium'}


def make_policy(name, conf, guest):
    if name == 'nova':
        return policy_mod.NovaPolicy()
    if name == 'kubevirt':
        return policy_mod.KubeVirtPolicy()
    return policy_mod.FerrymanPolicy(conf, guest['sla_class'], guest['importance'])


def run_one(policy, guest):
    memory, bw = guest['memory_mb'], guest['bandwidth_mibps']
    params = policy.start_params(memory, bw)
    model = simulation.MigrationModel(
        memory, guest['dirty_rate_mibps'], bw,
        max_downtime_ms=params['max_downtime_ms'],
        auto_converge=params['auto_converge'], compressed=params['compressed'],
        post_copy=params['post_copy'])
    steering = policy_mod.Steering(policy, memory, params)
    # A sample every 1/200 of the ideal copy time (at least 0.5 s), as a monitor
    # polling at a fixed period would see a migration of that length.
    interval = max(0.5, memory / bw / 200.0)
    how = 'pre-copy'
    while not model.finished:
        # The first sample comes at the start: the dirty rate is measured before
        # the copy (libvirt's dirty-rate calculation; the simulator knows it).
        action, _why = steering.next_action(model.stats())
        if action.kind == policy_mod.DOWNTIME:
            model.set_max_downtime(action.downtime_ms)
        elif action == policy_mod.POST_COPY:
            model.start_post_copy()
            how = 'post-copy'
        elif action == policy_mod.PAUSE:
            model.pause()
            how = 'paused'
        elif action == policy_mod.ABORT:
            model.abort()
        model.run_for(interval)
    stats = model.stats()
    return {'completed': stats['status'] == vocab.JOB_COMPLETED, 'how': how,
            'total_factor': stats['elapsed_s'] / (memory / bw),
            'downtime_ms': stats['downtime_ms'], 'sent_mb': stats['data_processed_mb']}


def _percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def run(conf, as_json=False):
    guests = list(matrix())
    report = {}
    for name in ('nova', 'kubevirt', 'ferryman'):
        results = []
        for guest in guests:
            result = run_one(make_policy(name, conf, guest), guest)
            result.update(sla_class=guest['sla_class'])
            results.append(result)
        done = [r for r in results if r['completed']]
        factors = [r['total_factor'] for r in done]
        per_class = {}
        for sla_class in policy_mod.SLA_CLASSES:
            mine = [r for r in done if r['sla_class'] == sla_class]
            pre = [r['downtime_ms'] for r in mine if r['how'] == 'pre-copy']
            limit = policy_mod.rule(conf, sla_class, 'medium').max_downtime_ms
            per_class[sla_class] = {
                'worst_precopy_downtime_ms': max(pre) if pre else None,
                'ferryman_limit_ms': limit,
                'worst_downtime_ms': max((r['downtime_ms'] for r in mine), default=None),
                'completed': len(mine)}
        report[name] = {
            'runs': len(results), 'completed': len(done),
            'completion_rate': len(done) / float(len(results)),
            'median_total_factor': statistics.median(factors) if factors else None,
            'p99_total_factor': _percentile(factors, 99),
            'finished_by': {h: sum(1 for r in done if r['how'] == h)
                            for h in ('pre-copy', 'post-copy', 'paused')},
            'sent_tib': sum(r['sent_mb'] for r in results) / GIB_MB / 1024.0,
            'per_class': per_class}
    if as_json:
        print(json.dumps({'matrix': {'memory_gib': MEMORY_GIB,
                                     'bandwidth_gbit': BANDWIDTH_GBIT,
                                     'dirty_fraction_of_bandwidth': DIRTY_FRACTIONS,
                                     'sla_classes': policy_mod.SLA_CLASSES},
                          'policies': report}, indent=2))
        return report
    from rich.console import Console
    from rich.table import Table
    table = Table(title='%d guests per policy (memory %s GiB x link %s Gbit/s x dirty '
                  'rate %s of the link x %s), importance medium' % (
                      len(guests), '/'.join(map(str, MEMORY_GIB)),
                      '/'.join(map(str, BANDWIDTH_GBIT)),
                      '/'.join(map(str, DIRTY_FRACTIONS)),
                      '/'.join(policy_mod.SLA_CLASSES)))
    for col in ('policy', 'completed', 'median total', 'p99 total',
                'pre-copy/post-copy/paused', 'worst pre-copy downtime ms '
                '(cattle/pet/panda)', 'worst downtime ms', 'sent TiB'):
        table.add_column(col)
    for name, r in report.items():
        pc = r['per_class']
        table.add_row(
            name, '%.1f%% (%d/%d)' % (100 * r['completion_rate'], r['completed'],
                                      r['runs']),
            _x(r['median_total_factor']), _x(r['p99_total_factor']),
            '%(pre-copy)d/%(post-copy)d/%(paused)d' % r['finished_by'],
            '/'.join(_ms(pc[c]['worst_precopy_downtime_ms'])
                     for c in policy_mod.SLA_CLASSES),
            '/'.join(_ms(pc[c]['worst_downtime_ms']) for c in policy_mod.SLA_CLASSES),
            '%.1f' % r['sent_tib'])
    console = Console(width=150)
    console.print(table)
    limits = '/'.join('%.0f' % report['ferryman']['per_class'][c]['ferryman_limit_ms']
                      for c in policy_mod.SLA_CLASSES)
    console.print('total time as a multiple of memory/bandwidth; Ferryman\'s '
                  'pre-copy downtime limits (medium): %s ms' % limits)
    return report


def _x(value):
    return '-' if value is None else '%.2fx' % value


def _ms(value):
    return '-' if value is None else '%.0f' % value
