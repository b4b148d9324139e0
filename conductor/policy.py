"""Convergence policy: how a running migration is steered to finish.

The caller says only what the guest is (its SLA class) and how much the move matters
(importance); this module turns that into hypervisor actions at each progress
sample. Nothing here talks to a host: ``decide`` is pure, so the conductor's monitor
and the policy benchmark run the very same code.

The table (defaults; ``[policy]`` options change it):

| class  | importance | max pre-copy downtime | post-copy | pause | when it cannot converge        |
|--------|------------|-----------------------|-----------|-------|--------------------------------|
| cattle | low/med/hi | 1000 / 2000 / 5000 ms | yes       | yes   | post-copy, else pause          |
| pet    | low/med/hi | 300 / 500 / 1000 ms   | yes       | high  | post-copy, else pause (high),  |
|        |            |                       |           |       | else abort at the timeout      |
| panda  | low/med/hi | 100 / 200 / 300 ms    | yes       | no    | post-copy, else abort at the   |
|        |            |                       |           |       | timeout                        |

Post-copy is used only where both hosts allow it; auto-converge where the source
allows it and post-copy is not available (throttling is then the last lever).
"Cannot converge" is predicted from the observed dirty rate and bandwidth as soon as
they are known, not waited for: pre-copy whose predicted end lies beyond
``target_time_factor`` x (data / bandwidth) switches at once.
A job whose figures the hypervisor leaves unanswered for ``stale_timeout`` is
stalled too: post-copy where allowed, else abort.
"""

import math
import time
import typing

from oslo_config import cfg

from ferryman.common import exception
from ferryman.common import vocabulary as vocab
from ferryman.common.vocabulary import IMPORTANCE, SLA_CLASSES  # noqa: F401


class Action(typing.NamedTuple):
    """One steering action: its kind (recorded in the task history by that name)
    and, for a downtime change, the new maximum downtime."""
    kind: str
    downtime_ms: typing.Optional[float] = None


DOWNTIME = 'set-downtime'  # the kind of set_downtime()'s actions
CONTINUE = Action('continue')
POST_COPY = Action('post-copy')
PAUSE = Action('pause')
ABORT = Action('abort')


def set_downtime(downtime_ms):
    return Action(DOWNTIME, downtime_ms)


policy_group = cfg.OptGroup('policy', title='Convergence policy')

policy_opts = [
    cfg.StrOpt('default_sla_class', default='pet', choices=SLA_CLASSES,
               help='SLA class of guests whose metadata names none.'),
    cfg.DictOpt('downtime_cattle', default={'low': 1000, 'medium': 2000,
                                            'high': 5000},
                help='Longest pre-copy switch-over pause (ms) of cattle guests, '
                     'per importance.'),
    cfg.DictOpt('downtime_pet', default={'low': 300, 'medium': 500, 'high': 1000},
                help='Longest pre-copy switch-over pause (ms) of pet guests.'),
    cfg.DictOpt('downtime_panda', default={'low': 100, 'medium': 200, 'high': 300},
                help='Longest pre-copy switch-over pause (ms) of panda guests.'),
    cfg.ListOpt('post_copy_classes', default=['cattle', 'pet', 'panda'],
                help='Classes that may finish in post-copy (the guest runs on the '
                     'destination while the rest of its memory follows).'),
    cfg.ListOpt('pause_allowed', default=['cattle:low', 'cattle:medium',
                                          'cattle:high', 'pet:high'],
                help='class:importance pairs that may be paused to finish.'),
    cfg.FloatOpt('target_time_factor', default=1.4, min=1.0,
                 help='Pre-copy predicted to take longer than this many times '
                      'data/bandwidth is not waited for.'),
    cfg.FloatOpt('completion_timeout_per_gib', default=150.0, min=1.0,
                 help='Seconds per GiB to move after which a migration that '
                      'still runs pre-copy takes the class\'s last resort.'),
    cfg.FloatOpt('stall_timeout', default=60.0, min=1.0,
                 help='Seconds without progress after which the same happens.'),
    cfg.FloatOpt('min_precopy_s', default=0.0, min=0.0,
                 help='Seconds of copying before a prediction may switch a '
                      'migration to post-copy or pause (timeouts still apply); '
                      'spares short migrations a switch they barely need.'),
    cfg.FloatOpt('stale_timeout', default=30.0, min=1.0,
                 help='Seconds the hypervisor may leave a running job\'s figures '
                      'unanswered (samples marked stale) before the migration '
                      'takes its last resort: post-copy where allowed, else '
                      'abort.'),
    cfg.IntOpt('downtime_steps', default=4, min=1,
               help='Steps from a quarter of the class\'s downtime up to all of '
                    'it; each is taken only when the prediction needs it.'),
    cfg.FloatOpt('compress_below_mibps', default=250.0, min=0.0,
                 help='Links slower than this (MiB/s) compress the stream.'),
]


def list_opts():
    return [(policy_group, policy_opts)]


def validate(name, value, choices):
    if value not in choices:
        raise exception.InvalidArgument(name=name, value=value,
                                        reason='expected one of %s' % ', '.join(choices))
    return value


class Rule(object):
    """What one class x importance may do."""

    def __init__(self, max_downtime_ms, post_copy, pause):
        self.max_downtime_ms = float(max_downtime_ms)
        self.post_copy = post_copy
        self.pause = pause

    def as_dict(self):
        return {'max_downtime_ms': self.max_downtime_ms,
                'post_copy': self.post_copy, 'pause': self.pause}


def rule(conf, sla_class, importance):
    p = conf.policy
    downtime = getattr(p, 'downtime_' + sla_class)
    return Rule(float(downtime[importance]), sla_class in p.post_copy_classes,
                '%s:%s' % (sla_class, importance) in p.pause_allowed)


def table(conf):
    return {(c, i): rule(conf, c, i).as_dict()
            for c in SLA_CLASSES for i in IMPORTANCE}


def predicted_seconds(remaining_mb, dirty_mibps, bandwidth_mibps, downtime_ms,
                      memory_mb=None):
    """Time until pre-copy switches over with ``downtime_ms`` allowed.

    QEMU decides only at the end of a pass: each pass sends what is dirty now,
    while the guest dirties more (never more than its memory); the switch comes
    once a pass ends with less left than the downtime can send.
    """
    if bandwidth_mibps <= 0:
        return math.inf
    fits = bandwidth_mibps * downtime_ms / 1000.0
    cap = memory_mb if memory_mb else math.inf
    seconds, left = 0.0, remaining_mb
    for _ in range(1000):
        seconds += left / bandwidth_mibps
        left = min(cap, dirty_mibps * left / bandwidth_mibps)
        if left <= fits:
            return seconds + left / bandwidth_mibps
        if dirty_mibps >= bandwidth_mibps:
            return math.inf
    return math.inf


class FerrymanPolicy(object):
    """Predictive: act as soon as the numbers say pre-copy will not make it."""

    name = 'ferryman'

    def __init__(self, conf, sla_class, importance, post_copy_allowed=True,
                 auto_converge_allowed=True):
        self.conf = conf.policy
        self.sla_class = sla_class
        self.importance = importance
        self.rule = rule(conf, sla_class, importance)
        self.post_copy = self.rule.post_copy and post_copy_allowed
        self.auto_converge = auto_converge_allowed and not self.post_copy
        self.stale_timeout = self.conf.stale_timeout
        steps = self.conf.downtime_steps
        top = self.rule.max_downtime_ms
        self.ladder = [top / 4 + (top - top / 4) * i / steps for i in range(steps + 1)]

    def start_params(self, data_mb, bandwidth_mibps):
        # Never compression with post-copy: with QEMU 7.2's XBZRLE a guest
        # switched to post-copy came up with corrupted memory on its destination
        # (a kernel stack overwritten with stale page contents).
        return {'max_downtime_ms': self.ladder[0], 'post_copy': self.post_copy,
                'auto_converge': self.auto_converge,
                'compressed': (not self.post_copy and
                               0 < bandwidth_mibps < self.conf.compress_below_mibps)}

    def _last_resort(self, why):
        if self.post_copy:
            return POST_COPY, why + '; switching to post-copy'
        if self.rule.pause:
            return PAUSE, why + '; pausing the guest to finish'
        return ABORT, why + '; %s/%s may neither post-copy nor pause' % (
            self.sla_class, self.importance)

    def decide(self, sample, state):
        """One action for one progress sample, and why (with the numbers).

        ``state``: data_mb (to move at start), downtime_ms (set now), post_copy,
        paused, last_progress_s (when remaining last shrank).
        """
        if state['post_copy'] or state['paused']:
            return CONTINUE, 'finishing'
        t = sample['elapsed_s']
        bw = sample['bandwidth_mibps'] or 0.0
        dirty = sample['dirty_rate_mibps'] or 0.0
        remaining = sample['memory_remaining_mb'] or 0.0
        gib = state['data_mb'] / 1024.0
        if t > self.conf.completion_timeout_per_gib * max(gib, 1.0):
            return self._last_resort('pre-copy still running after %.0f s' % t)
        if t - state['last_progress_s'] > self.conf.stall_timeout:
            return self._last_resort('no progress for %.0f s' % (
                t - state['last_progress_s']))
        if bw <= 0:
            return CONTINUE, 'no bandwidth figure yet'
        if remaining <= bw * state['downtime_ms'] / 1000.0:
            # The rest fits in the allowed downtime: this pass switches over.
            return CONTINUE, 'switching over'
        # The job's clock includes its setup (starting the destination's QEMU):
        # count only copying time against the budget.
        t = max(0.0, t - (sample.get('setup_s') or 0.0))
        budget = self.conf.target_time_factor * state['data_mb'] / bw - t
        numbers = ('remaining %.0f MiB, dirty %.0f MiB/s, bandwidth %.0f MiB/s, '
                   'budget %.1f s' % (remaining, dirty, bw, budget))
        memory = sample.get('memory_total_mb')
        if predicted_seconds(remaining, dirty, bw, state['downtime_ms'],
                             memory) <= budget:
            return CONTINUE, numbers
        for downtime in self.ladder:
            if downtime > state['downtime_ms'] and predicted_seconds(
                    remaining, dirty, bw, downtime, memory) <= budget:
                return set_downtime(downtime), numbers + '; %.0f ms downtime suffices' % (
                    downtime)
        if (self.post_copy or self.rule.pause) and t < self.conf.min_precopy_s:
            return CONTINUE, numbers + '; pre-copy gets %.0f s first' % (
                self.conf.min_precopy_s)
        if self.post_copy or self.rule.pause:
            return self._last_resort(numbers + '; pre-copy will not converge in time')
        if self.ladder[-1] > state['downtime_ms']:
            return set_downtime(self.ladder[-1]), numbers + '; class maximum downtime'
        return CONTINUE, numbers + '; converging by auto-converge or the timeout'


class NovaPolicy(object):
    """Nova's defaults: a downtime ladder to 500 ms in 10 steps of 75 s per GiB,
    abort after 800 s per GiB; no post-copy, no auto-converge."""

    name = 'nova'

    def __init__(self, max_downtime_ms=500.0, steps=10, step_delay_per_gib=75.0,
                 timeout_per_gib=800.0):
        self.max_downtime = max_downtime_ms
        self.steps = steps
        self.step_delay = step_delay_per_gib
        self.timeout = timeout_per_gib

    def _ladder(self, gib):
        base = self.max_downtime / self.steps
        offset = (self.max_downtime - base) / self.steps
        return [(self.step_delay * gib * i, base + offset * i)
                for i in range(self.steps + 1)]

    def start_params(self, data_mb, bandwidth_mibps):
        return {'max_downtime_ms': self._ladder(data_mb / 1024.0)[0][1],
                'post_copy': False, 'auto_converge': False, 'compressed': False}

    def decide(self, sample, state):
        gib = max(state['data_mb'] / 1024.0, 1.0)
        t = sample['elapsed_s']
        if t > self.timeout * gib:
            return ABORT, 'completion timeout %.0f s' % (self.timeout * gib)
        due = [d for delay, d in self._ladder(gib) if t >= delay]
        if due and due[-1] > state['downtime_ms']:
            return set_downtime(due[-1]), 'downtime step at %.0f s' % t
        return CONTINUE, ''


class KubeVirtPolicy(object):
    """KubeVirt's defaults: 150 s per GiB completion timeout, 150 s progress
    timeout, 900 ms downtime, post-copy at the timeout where allowed."""

    name = 'kubevirt'

    def __init__(self, post_copy_allowed=True, timeout_per_gib=150.0,
                 progress_timeout=150.0, max_downtime_ms=900.0):
        self.post_copy = post_copy_allowed
        self.timeout = timeout_per_gib
        self.progress_timeout = progress_timeout
        self.downtime = max_downtime_ms

    def start_params(self, data_mb, bandwidth_mibps):
        return {'max_downtime_ms': self.downtime, 'post_copy': self.post_copy,
                'auto_converge': False, 'compressed': False}

    def decide(self, sample, state):
        if state['post_copy'] or state['paused']:
            return CONTINUE, ''
        t = sample['elapsed_s']
        if t > self.timeout * max(state['data_mb'] / 1024.0, 1.0):
            return (POST_COPY if self.post_copy else ABORT), 'completion timeout'
        if t - state['last_progress_s'] > self.progress_timeout:
            return ABORT, 'progress timeout'
        return CONTINUE, ''


class Steering(object):
    """Keeps the state ``decide`` needs across samples of one migration."""

    def __init__(self, policy, data_mb, start_params, clock=time.monotonic):
        self.policy = policy
        self.state = {'data_mb': data_mb, 'post_copy': False, 'paused': False,
                      'downtime_ms': start_params['max_downtime_ms'],
                      'last_progress_s': 0.0}
        self._best = math.inf
        # A stale sample repeats the job's last figures, its clock included, so
        # the stall timeout (on that clock) would never fire: stale runs are
        # timed on ours.
        self.stale_timeout = getattr(policy, 'stale_timeout', None)
        self._clock = clock
        self._answered = None  # when the hypervisor last gave figures
        self._gave_up = False

    def force_complete(self):
        """An operator wants it done now: post-copy where allowed, else pause."""
        post_copy = getattr(self.policy, 'post_copy', False)
        action = POST_COPY if post_copy else PAUSE
        self.state['post_copy' if post_copy else 'paused'] = True
        return action, 'force-complete requested by an operator'

    def _stale(self):
        """The action for a sample the hypervisor did not answer."""
        now = self._clock()
        if self._answered is None:
            self._answered = now  # stale from the first sample on
        waited = now - self._answered
        if (self.state['post_copy'] or self.state['paused'] or self._gave_up or
                self.stale_timeout is None or waited <= self.stale_timeout):
            return CONTINUE, 'no job figures for %.0f s' % waited
        self._gave_up = True
        why = 'the hypervisor has left the job\'s figures unanswered for %.0f s' % (
            waited)
        # Pausing would leave a job nobody can watch running on; post-copy ends
        # it on the destination, an abort on the source.
        if getattr(self.policy, 'post_copy', False):
            self.state['post_copy'] = True
            return POST_COPY, why + '; switching to post-copy'
        return ABORT, why + '; aborting (no post-copy allowed)'

    def next_action(self, sample):
        if sample.get('stale'):
            return self._stale()
        self._answered = self._clock()
        remaining = sample.get('memory_remaining_mb')
        if remaining is not None and remaining < self._best - 1e-6:
            self._best = remaining
            self.state['last_progress_s'] = sample['elapsed_s']
        action, why = self.policy.decide(sample, self.state)
        if action.kind == DOWNTIME:
            self.state['downtime_ms'] = action.downtime_ms
        elif action == POST_COPY:
            self.state['post_copy'] = True
        elif action == PAUSE:
            self.state['paused'] = True
        return action, why


def data_mb(instance, subtype):
    """What a migration moves: memory, plus local disks for block."""
    disk = instance['disk_gb'] * 1024.0 if subtype == vocab.BLOCK else 0.0
    return float(instance['memory_mb']) + disk


def for_migration(conf, instance, importance, source, destination):
    """Ferryman's policy for one migration, within what both hosts allow."""
    src, dst = source.get('features') or {}, destination.get('features') or {}
    sla_class = instance.get('sla_class') or conf.policy.default_sla_class
    if sla_class not in SLA_CLASSES:
        sla_class = conf.policy.default_sla_class
    return FerrymanPolicy(
        conf, sla_class, importance,
        post_copy_allowed=src.get('post_copy', True) and dst.get('post_copy', True),
        auto_converge_allowed=src.get('auto_converge', True))


def link_bandwidth(source, destination):
    known = [h['features'].get('bandwidth_mibps') or 0
             for h in (source, destination) if h.get('features')]
    known = [b for b in known if b > 0]
    return min(known) if known else 0.0
