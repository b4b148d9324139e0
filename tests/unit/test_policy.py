"""The convergence policy: its table, its prediction, its decisions."""

import math

import pytest

from compute_agent.virt import simulation
from conductor import policy
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception


@pytest.fixture(scope='module')
def conf():
    return ferryman_conf.make_conf(config_files=[])


def test_default_table(conf):
    t = policy.table(conf)
    assert t[('panda', 'low')] == {'max_downtime_ms': 100.0, 'post_copy': True,
                                   'pause': False}
    assert t[('pet', 'high')]['pause'] and not t[('pet', 'medium')]['pause']
    assert all(t[('cattle', i)]['pause'] for i in policy.IMPORTANCE)
    # More important moves may pause longer; more precious guests less.
    for c in policy.SLA_CLASSES:
        downtimes = [t[(c, i)]['max_downtime_ms'] for i in policy.IMPORTANCE]
        assert downtimes == sorted(downtimes)
    for i in policy.IMPORTANCE:
        assert (t[('panda', i)]['max_downtime_ms'] < t[('pet', i)]['max_downtime_ms']
                < t[('cattle', i)]['max_downtime_ms'])


def test_table_is_configurable():
    c = ferryman_conf.make_conf(config_files=[], overrides={
        'policy.downtime_pet': {'low': 50, 'medium': 60, 'high': 70},
        'policy.post_copy_classes': ['cattle']})
    assert policy.rule(c, 'pet', 'medium').max_downtime_ms == 60
    assert not policy.rule(c, 'pet', 'medium').post_copy


def test_importance_is_validated():
    with pytest.raises(exception.InvalidArgument) as err:
        policy.validate('importance', 'urgent', policy.IMPORTANCE)
    assert 'urgent' in str(err.value)


@pytest.mark.parametrize('remaining,dirty,bw,downtime,expected', [
    (1000, 0, 100, 500, 10.0),            # idle: one pass
    (1000, 200, 100, 500, math.inf),      # dirtier than the link
    (1000, 50, 100, 500, 10 + 5 + 2.5 + 1.25 + 0.625 + 0.3125),  # halves
])
def test_prediction(remaining, dirty, bw, downtime, expected):
    assert policy.predicted_seconds(remaining, dirty, bw, downtime) == \
        pytest.approx(expected)


def test_prediction_agrees_with_the_simulator():
    for dirty in (0.0, 100.0, 400.0, 800.0):
        model = simulation.MigrationModel(4096, dirty, 1000.0, max_downtime_ms=300)
        predicted = policy.predicted_seconds(4096, dirty, 1000.0, 300, 4096)
        while not model.finished:
            model.run_for(0.05)
        assert model.stats()['elapsed_s'] == pytest.approx(predicted, rel=0.02)


def _sample(**kw):
    s = {'elapsed_s': 0.0, 'bandwidth_mibps': 1000.0, 'dirty_rate_mibps': 0.0,
         'memory_remaining_mb': 8192.0, 'memory_total_mb': 8192.0}
    s.update(kw)
    return s


def _steer(conf, sla, importance, **kw):
    p = policy.FerrymanPolicy(conf, sla, importance, **kw)
    return p, policy.Steering(p, 8192.0, p.start_params(8192.0, 1000.0))


def test_converging_guest_is_left_alone(conf):
    _p, s = _steer(conf, 'pet', 'medium')
    assert s.next_action(_sample(dirty_rate_mibps=50.0))[0] == policy.CONTINUE


def test_predicted_non_convergence_switches_at_once(conf):
    _p, s = _steer(conf, 'panda', 'low')
    action, why = s.next_action(_sample(dirty_rate_mibps=2000.0))
    assert action == policy.POST_COPY
    assert '2000 MiB/s' in why  # the numbers behind it
    assert s.next_action(_sample(elapsed_s=1))[0] == policy.CONTINUE


def test_min_precopy_defers_the_predicted_switch_only(conf):
    conf.set_override('min_precopy_s', 10.0, group='policy')
    try:
        _p, s = _steer(conf, 'panda', 'low')
        action, why = s.next_action(_sample(dirty_rate_mibps=2000.0, elapsed_s=3.0))
        assert action == policy.CONTINUE and 'gets 10 s first' in why
        action, _ = s.next_action(_sample(dirty_rate_mibps=2000.0, elapsed_s=10.5))
        assert action == policy.POST_COPY
    finally:
        conf.clear_override('min_precopy_s', group='policy')


def test_raises_downtime_when_that_suffices(conf):
    _p, s = _steer(conf, 'cattle', 'high')
    # Late in the copy, dirtying 90%: in time only with more than the first step.
    action, _ = s.next_action(_sample(memory_remaining_mb=1500.0,
                                      dirty_rate_mibps=900.0, elapsed_s=8.0))
    assert action.kind == policy.DOWNTIME
    assert action[1] > s.policy.ladder[0]


@pytest.mark.parametrize('sla,importance,post_copy,expected', [
    ('pet', 'high', False, policy.PAUSE),
    ('cattle', 'low', False, policy.PAUSE),
    ('pet', 'medium', True, policy.POST_COPY),
])
def test_last_resort_follows_the_table(conf, sla, importance, post_copy, expected):
    _p, s = _steer(conf, sla, importance, post_copy_allowed=post_copy)
    assert s.next_action(_sample(dirty_rate_mibps=3000.0))[0] == expected


def test_no_post_copy_no_pause_throttles_then_aborts_at_timeout(conf):
    p, s = _steer(conf, 'panda', 'medium', post_copy_allowed=False)
    assert p.start_params(8192.0, 1000.0)['auto_converge'] is True
    first, _ = s.next_action(_sample(dirty_rate_mibps=3000.0))
    assert first == policy.set_downtime(p.rule.max_downtime_ms)
    assert s.next_action(_sample(dirty_rate_mibps=3000.0, elapsed_s=10))[0] == \
        policy.CONTINUE
    timeout = conf.policy.completion_timeout_per_gib * 8
    action, why = s.next_action(_sample(dirty_rate_mibps=3000.0,
                                        elapsed_s=timeout + 1))
    assert action == policy.ABORT and 'neither post-copy nor pause' in why


def test_stall_triggers_last_resort(conf):
    _p, s = _steer(conf, 'cattle', 'medium', post_copy_allowed=False)
    s.state['downtime_ms'] = 1e9  # pre-copy would end; only the stall matters
    s.next_action(_sample(memory_remaining_mb=100.0))
    action, why = s.next_action(_sample(
        memory_remaining_mb=100.0, elapsed_s=conf.policy.stall_timeout + 1))
    assert action == policy.PAUSE and 'no progress' in why


class _Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _stale_run(conf, sla, importance, post_copy_allowed):
    """Samples that libvirt left unanswered (stale: the last figures again, their
    clock stopped) until the stale timeout has passed on the conductor's clock."""
    p = policy.FerrymanPolicy(conf, sla, importance,
                              post_copy_allowed=post_copy_allowed)
    clock = _Clock()
    s = policy.Steering(p, 8192.0, p.start_params(8192.0, 1000.0), clock=clock)
    frozen = _sample(memory_remaining_mb=4000.0, dirty_rate_mibps=50.0,
                     elapsed_s=5.0)
    assert s.next_action(frozen)[0] == policy.CONTINUE
    actions = []
    while clock.now < 1000.0 + conf.policy.stale_timeout + 5:
        clock.now += 2.0
        actions.append(s.next_action(dict(frozen, stale=True)))
    return s, clock, frozen, actions


@pytest.mark.parametrize('post_copy_allowed,expected', [
    (True, policy.POST_COPY), (False, policy.ABORT)])
def test_a_run_of_stale_samples_is_a_stall(conf, post_copy_allowed, expected):
    # cattle/high may pause, yet a job libvirt does not answer about is not
    # paused: post-copy ends it on the destination, else it is aborted.
    _s, _c, _f, actions = _stale_run(conf, 'cattle', 'high', post_copy_allowed)
    names = [a for a, _why in actions]
    acted = [i for i, a in enumerate(names) if a != policy.CONTINUE]
    assert [names[i] for i in acted] == [expected], actions
    # Not before the timeout (samples every 2 s)...
    assert (acted[0] + 1) * 2.0 > conf.policy.stale_timeout
    assert (acted[0] + 1) * 2.0 <= conf.policy.stale_timeout + 2.0
    assert 'unanswered for %.0f s' % ((acted[0] + 1) * 2.0) in actions[acted[0]][1]
    # ...and once only.
    assert all(a == policy.CONTINUE for a in names[acted[0] + 1:])


def test_an_answer_ends_a_stale_run(conf):
    p = policy.FerrymanPolicy(conf, 'pet', 'medium')
    clock = _Clock()
    s = policy.Steering(p, 8192.0, p.start_params(8192.0, 1000.0), clock=clock)
    sample = _sample(memory_remaining_mb=4000.0, dirty_rate_mibps=50.0)
    for _ in range(3):
        # Stale for most of the timeout, then one answer: the count starts again.
        clock.now += conf.policy.stale_timeout * 0.9
        assert s.next_action(dict(sample, stale=True))[0] == policy.CONTINUE
        assert s.next_action(sample)[0] == policy.CONTINUE
    clock.now += conf.policy.stale_timeout * 0.9
    assert s.next_action(dict(sample, stale=True))[0] == policy.CONTINUE
    clock.now += conf.policy.stale_timeout * 0.2
    assert s.next_action(dict(sample, stale=True))[0] == policy.POST_COPY


def test_stale_timeout_is_configurable():
    c = ferryman_conf.make_conf(config_files=[], overrides={
        'policy.stale_timeout': 5.0})
    _s, _c, _f, actions = _stale_run(c, 'panda', 'low', False)
    assert [a for a, _w in actions].index(policy.ABORT) == 2  # 6 s after the answer


def test_nova_ladder_and_timeout():
    p = policy.NovaPolicy()
    s = policy.Steering(p, 1024.0, p.start_params(1024.0, 100.0))
    assert s.state['downtime_ms'] == 50
    assert s.next_action(_sample(elapsed_s=75.0))[0] == policy.set_downtime(95.0)
    assert s.next_action(_sample(elapsed_s=801.0))[0] == policy.ABORT


def test_force_complete_prefers_post_copy(conf):
    _p, s = _steer(conf, 'pet', 'low')
    assert s.force_complete()[0] == policy.POST_COPY
    _p, s = _steer(conf, 'pet', 'low', post_copy_allowed=False)
    assert s.force_complete()[0] == policy.PAUSE


def test_simulator_post_copy_and_pause():
    m = simulation.MigrationModel(4096, 5000.0, 1000.0, post_copy=True)
    m.run_for(1.0)
    m.start_post_copy()
    m.run_for(100)
    st = m.stats()
    assert st['status'] == 'completed' and st['downtime_ms'] == 30.0
    assert st['elapsed_s'] < 4096 / 1000.0 + 1.1
    m = simulation.MigrationModel(4096, 5000.0, 1000.0)
    with pytest.raises(ValueError):
        m.start_post_copy()
    m.run_for(2.0)
    m.pause()
    m.run_for(100)
    st = m.stats()
    assert st['status'] == 'completed'
    assert st['downtime_ms'] > 1000  # the whole pause counts as downtime


def test_simulator_auto_converge_converges():
    m = simulation.MigrationModel(4096, 1500.0, 1000.0, auto_converge=True)
    m.run_for(1000)
    assert m.stats()['status'] == 'completed'
    assert m.stats()['throttle_percent'] >= 40
    m = simulation.MigrationModel(4096, 1500.0, 1000.0)
    m.run_for(1000)
    assert m.stats()['status'] == 'running'


@pytest.mark.parametrize('post_copy_allowed', [True, False])
def test_slow_links_compress_only_without_post_copy(conf, post_copy_allowed):
    p = policy.FerrymanPolicy(conf, 'pet', 'medium',
                              post_copy_allowed=post_copy_allowed)
    slow = p.start_params(1024.0, 5.0)
    assert slow['post_copy'] is post_copy_allowed
    # XBZRLE with post-copy corrupted guests' memory on QEMU 7.2.
    assert slow['compressed'] is (not post_copy_allowed)
    assert p.start_params(1024.0, 10000.0)['compressed'] is False
