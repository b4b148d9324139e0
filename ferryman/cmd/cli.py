"""ferryman: the operator's command line. Every command takes --json."""

import argparse
import json
import os
import sys
import time

import ferryman  # noqa: F401  (quiets the eventlet warning before oslo imports)
from ferryman.common import exception
from ferryman.common import validation
from flows import states

TERMINAL = states.TERMINAL


def _print_json(data):
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _console():
    from rich.console import Console
    return Console()


def _table(title, columns, rows):
    from rich.table import Table
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*['' if v is None else str(v) for v in row])
    _console().print(table)


def _api(args):
    from conductor import rpcapi
    from ferryman.common import conf as ferryman_conf
    from ferryman.common import rpc
    conf = ferryman_conf.make_conf(config_files=args.config_file or None)
    if rpc.in_process(conf.transport_url):
        rpc.quiet_messaging_logs()
    else:
        _check_broker(conf)
    return rpcapi.ConductorAPI(conf, timeout=args.timeout)


def _check_broker(conf):
    # oslo.messaging retries an unreachable broker forever, silently; say so now.
    import socket

    import oslo_messaging
    url = oslo_messaging.TransportURL.parse(conf, conf.transport_url)
    if not url.hosts:
        raise exception.Invalid(
            reason='transport_url %r names no broker host: set it in [DEFAULT] of '
                   '/etc/ferryman/ferryman.conf or pass --config-file FILE'
            % conf.transport_url)
    for host in url.hosts:
        try:
            socket.create_connection((host.hostname or '127.0.0.1',
                                      host.port or 5672), timeout=5).close()
            return
        except OSError as exc:
            error = exc
    raise exception.FerrymanError(
        'cannot reach the message broker of transport_url %s: %s' % (
            url.transport + '://' + ','.join(
                '%s:%s' % (h.hostname, h.port) for h in url.hosts), error))


TASK_COLUMNS = ('atom', 'state', 'host', 'started_at', 'ended_at', 'error')


def _print_tasks(title, events):
    _table(title, TASK_COLUMNS, [[e[c] for c in TASK_COLUMNS] for e in events])


# Commands. -----------------------------------------------------------------------------
def cmd_demo(args):
    from ferryman.sim import demo
    return demo.run(as_json=args.json)


def cmd_sandbox(args):
    from ferryman.sim import sandbox
    return sandbox.run(hosts=args.hosts, api_port=args.api_port)


def cmd_auth_new_secret(args):
    from ferryman.common import rpc_auth
    if os.path.exists(args.output) and not args.force:
        # A new secret invalidates every agent's key.
        raise exception.InvalidArgument(
            name='--output', value=args.output,
            reason='exists; a new secret invalidates every agent key derived '
                   'from the old one (--force to replace it)')
    rpc_auth.write_private(args.output, rpc_auth.new_secret())
    if args.json:
        return _print_json({'secret_file': args.output})
    print('Wrote a new conductor secret to %s (mode 0600); set [auth] '
          'secret_file = %s in the conductor\'s configuration' % (
              args.output, args.output))


def _secret_file(args):
    from ferryman.common import conf as ferryman_conf
    secret_file = args.secret_file
    if not secret_file:
        conf = ferryman_conf.make_conf(config_files=args.config_file or None)
        secret_file = conf.auth.secret_file
    if not secret_file:
        raise exception.InvalidArgument(
            name='--secret-file', value=None,
            reason='name the conductor secret (or set [auth] secret_file in '
                   'the --config-file)')
    return secret_file


def cmd_auth_agent_key(args):
    from ferryman.common import rpc_auth
    rpc_auth.write_agent_key(_secret_file(args), args.host, args.output)
    if args.json:
        return _print_json({'host': args.host, 'key_file': args.output})
    print('Wrote the key of host %s to %s (mode 0600); copy it to that host '
          'only and set [auth] key_file there' % (args.host, args.output))


def cmd_auth_operator_key(args):
    from ferryman.common import rpc_auth
    rpc_auth.write_operator_key(_secret_file(args), args.name, args.output)
    if args.json:
        return _print_json({'operator': args.name, 'operator_key_file':
                            args.output})
    print('Wrote the key of operator %s to %s (mode 0600); give it to that '
          'operator\'s client only (the ferryman CLI, ferryman-api) and set '
          '[auth] operator_key_file there' % (args.name, args.output))


def cmd_audit(args):
    report = _api(args).audit()
    if args.json:
        _print_json(report)
    else:
        for v in report['violations']:
            print('VIOLATION %-10s %s' % (v['kind'], v['text']))
        print('%d violation(s); checked %d hosts, %d instances, %d active '
              'migrations' % (len(report['violations']), report['hosts'],
                              report['instances'], report['active_migrations']))
    return 1 if report['violations'] else 0


def cmd_host_list(args):
    hosts = _api(args).list_hosts()
    if args.json:
        return _print_json(hosts)
    _table('hosts', ('name', 'up', 'forced down', 'enabled', 'hypervisor',
                     'vcpus used/total', 'memory MiB used/total',
                     'disk GiB used/total', 'migrating out'),
           [[h['name'], h['up'], h['forced_down'], h['enabled'], h['hypervisor_type'],
             '%s/%s' % (h['used']['vcpus'], h['vcpus']),
             '%s/%s' % (h['used']['memory_mb'], h['memory_mb']),
             '%s/%s' % (h['used']['disk_gb'], h['disk_gb']), h['migrations_out']]
            for h in hosts])
    for h in hosts:
        if h.get('problems'):
            print('Host %s: its record cannot be interpreted (no migrations go '
                  'there; see ferryman audit): %s' % (
                      h['name'], '; '.join(h['problems'])))


def _set_enabled(args, enabled):
    host = _api(args).set_host_enabled(args.host, enabled,
                                       getattr(args, 'reason', None))
    if args.json:
        return _print_json(host)
    print('%s %s' % (host['name'], 'enabled' if enabled else 'disabled'))


def cmd_host_force_down(args):
    host = _api(args).force_down(args.host, not args.undo)
    if args.json:
        return _print_json(host)
    print('%s %s' % (host['name'], 'forced down' if host['forced_down'] else
                     'no longer forced down'))


def cmd_host_enable(args):
    return _set_enabled(args, True)


def cmd_host_disable(args):
    return _set_enabled(args, False)


def positive(value):
    """An option's whole number of at least 1, refused naming the value."""
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or str(number) != value.strip():
        number = value  # not written as a whole number ('2.0', '+2', '02')
    try:
        return validation.whole_number('option', number)
    except exception.InvalidArgument as exc:
        # argparse names the option itself.
        raise argparse.ArgumentTypeError('invalid value %r: %s' % (
            value, exc.kwargs['reason']))


def _drain_rows(drain, which):
    return [[uuid, g['name'], g['status'], g['destination'] or '', g['migration'] or '',
             g['error'] or ''] for uuid, g in sorted(
                 drain['guests'].items(), key=lambda kv: kv[1]['name'])
            if g['status'] in which]


def _print_drain(drain):
    c = drain['counts']
    print('Drain %s of %s: %s; %d guests: %d moved, %d could not move, %d '
          'migrating, %d pending' % (drain['id'], drain['host'], drain['status'],
                                     drain['total'], c['moved'], c['failed'],
                                     c['migrating'], c['pending']))
    if drain['status'] == 'running' and drain.get('owner'):
        # With several conductors: which one advances it, and until when at
        # least (a dead owner's drain is taken over once its lease lapses).
        print('Advanced by %s, lease until %s' % (
            drain['owner'], drain.get('lease_expires_at')))
    waiting = [(g['name'], uuid, g) for uuid, g in drain['guests'].items()
               if g['status'] == 'pending' and g.get('attempts')]
    if waiting:
        print('Waiting for room:')
        for name, uuid, g in sorted(waiting):
            print('  %s (%s): %d attempt%s so far, last: %s' % (
                name, uuid, g['attempts'], 's' if g['attempts'] > 1 else '',
                g['error']))
    failed = _drain_rows(drain, ('failed',))
    if failed:
        # Plain lines: the reasons are long, a table would cut them.
        print('Could not move:')
        for uuid, name, _status, _dest, _mig, why in failed:
            print('  %s (%s): %s' % (name, uuid, why))


def _follow_drain(api, drain, as_json):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    if as_json:
        while drain['status'] == 'running':
            time.sleep(0.5)
            drain = api.get_drain(drain['id'])
        return drain
    columns = (TextColumn('{task.description}'), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, transient=False) as progress:
        bar = progress.add_task('draining %s' % drain['host'], total=drain['total'])
        while True:
            c = drain['counts']
            progress.update(bar, total=drain['total'],
                            completed=c['moved'] + c['failed'],
                            description='draining %s: %d migrating, %d failed' % (
                                drain['host'], c['migrating'], c['failed']))
            if drain['status'] != 'running':
                break
            time.sleep(0.5)
            drain = api.get_drain(drain['id'])
    return drain


def cmd_host_drain(args):
    api = _api(args)
    drain = api.drain_host(args.host, max_parallel=args.max_parallel)
    if not args.no_wait:
        drain = _follow_drain(api, drain, args.json)
    if args.json:
        _print_json(drain)
    else:
        _print_drain(drain)
    if drain['status'] != 'running' and drain['counts']['failed']:
        return 1


def cmd_drain_list(args):
    drains = _api(args).list_drains(host=args.host)
    if args.json:
        return _print_json(drains)
    _table('drains', ('id', 'host', 'status', 'guests', 'moved', 'failed',
                      'max parallel', 'created_at'),
           [[d['id'], d['host'], d['status'], d['total'], d['counts']['moved'],
             d['counts']['failed'], d['max_parallel'], d['created_at']]
            for d in drains])


def cmd_drain_show(args):
    api = _api(args)
    drain = api.get_drain(args.drain)
    if args.wait:
        drain = _follow_drain(api, drain, args.json)
    if args.json:
        return _print_json(drain)
    _print_drain(drain)
    _table('guests', ('uuid', 'name', 'status', 'destination', 'migration', 'why'),
           _drain_rows(drain, ('pending', 'migrating', 'moved')))


def cmd_instance_list(args):
    instances = _api(args).list_instances(host=args.host)
    if args.json:
        return _print_json(instances)
    _table('instances', ('uuid', 'name', 'host', 'power', 'vcpus', 'memory MiB',
                         'storage', 'sla', 'migration'),
           [[i['uuid'], i['name'], i['host'], i['power_state'], i['vcpus'],
             i['memory_mb'], i['storage'], i['sla_class'], i['migration_id']]
            for i in instances])


def _show_migration(mig):
    _table('migration %s' % mig['id'], ('field', 'value'),
           [[k, json.dumps(v) if isinstance(v, (dict, list)) else v]
            for k, v in sorted(mig.items())])


def _wait(api, mig, as_json):
    from rich.progress import Progress
    if as_json:
        while mig['status'] not in TERMINAL:
            time.sleep(0.2)
            mig = api.get_migration(mig['id'])
        return mig
    with Progress(transient=False) as progress:
        bar = progress.add_task('%s %s' % (mig['subtype'], mig['status']), total=100)
        while mig['status'] not in TERMINAL:
            time.sleep(0.2)
            mig = api.get_migration(mig['id'])
            percent = (mig['progress'] or {}).get('percent') or 0
            if mig['status'] in (states.FINISHING, states.COMPLETED):
                percent = 100
            progress.update(bar, completed=percent,
                            description='%s %s' % (mig['subtype'], mig['status']))
    return mig


def cmd_live_migrate(args):
    api = _api(args)
    mig = api.live_migrate(args.instance, host=args.host,
                           block_migration=args.block_migration, force=args.force,
                           importance=args.importance)
    return _follow_migration(args, api, mig)


def cmd_evacuate(args):
    api = _api(args)
    mig = api.evacuate(args.instance, host=args.host, force=args.force)
    return _follow_migration(args, api, mig)


def _follow_migration(args, api, mig):
    if args.wait:
        mig = _wait(api, mig, args.json)
    if args.json:
        _print_json(mig)
    else:
        print('Migration %s of %s: %s -> %s (%s): %s' % (
            mig['id'], args.instance, mig['source'], mig['destination'],
            mig['subtype'], mig['status']))
        if mig.get('error'):
            print('Error: %s' % mig['error'])
    if args.wait and mig['status'] != states.COMPLETED:
        return 1


def cmd_migration_list(args):
    migrations = _api(args).list_migrations(instance=args.instance,
                                            status=args.status, host=args.host)
    if args.json:
        return _print_json(migrations)
    _table('migrations', ('id', 'instance', 'subtype', 'source', 'destination',
                          'status', 'created_at'),
           [[m['id'], m['instance_uuid'], m['subtype'], m['source'],
             m['destination'], m['status'], m['created_at']] for m in migrations])


def cmd_migration_show(args):
    mig = _api(args).get_migration(args.migration)
    if args.json:
        return _print_json(mig)
    _show_migration(mig)


def _request(args, call, what, wanted):
    """Ask for something of a migration; with --wait, see it through."""
    api = _api(args)
    mig = getattr(api, call)(args.migration)
    if args.wait:
        mig = _wait(api, mig, args.json)
    if args.json:
        _print_json(mig)
    else:
        print('Migration %s: %s requested; now %s'
              % (mig['id'], what, mig['status']))
    if args.wait and mig['status'] != wanted:
        return 1


def cmd_migration_force_complete(args):
    return _request(args, 'force_complete_migration', 'force-complete',
                    states.COMPLETED)


def cmd_migration_abort(args):
    return _request(args, 'abort_migration', 'abort', states.CANCELLED)


def cmd_migration_tasks(args):
    events = _api(args).get_task_history(args.migration)
    if args.json:
        return _print_json(events)
    _print_tasks('tasks of migration %s' % args.migration, events)


def _output_picture(args, subtype, atom_states, machine=False):
    from ferryman.cmd import graph
    if machine:
        data = (graph.machine_text(subtype).encode() if args.format == 'text' else
                graph.machine_dot(subtype).encode() if args.format == 'dot' else
                graph.machine_render(subtype, args.format))
    elif args.format == 'text':
        data = graph.text(subtype, atom_states).encode()
    elif args.format == 'dot':
        data = graph.dot(subtype, atom_states).encode()
    else:
        data = graph.render(subtype, args.format, atom_states)
    if args.output:
        with open(args.output, 'wb') as f:
            f.write(data)
        if args.json:
            _print_json({'subtype': subtype, 'format': args.format,
                         'output': args.output, 'bytes': len(data)})
        return
    if args.format in ('png',):
        raise exception.Invalid(reason='--format png needs --output FILE')
    if args.json:
        return _print_json({'subtype': subtype, 'format': args.format,
                            'states': atom_states, 'picture': data.decode()})
    sys.stdout.write(data.decode())
    if not data.endswith(b'\n'):
        sys.stdout.write('\n')


def cmd_flow_show(args):
    return _output_picture(args, args.subtype, None)


def cmd_flow_states(args):
    return _output_picture(args, args.subtype, None, machine=True)


def cmd_flow_render(args):
    from ferryman.cmd import graph
    api = _api(args)
    mig = api.get_migration(args.migration)
    atom_states = graph.atom_states(api.get_task_history(args.migration))
    return _output_picture(args, mig['subtype'], atom_states)


# Parser. ---------------------------------------------------------------------------------
def _common_options(defaults):
    # Taken before or after the command; a command's parser has no defaults of
    # its own, or they would overwrite what came before the command.
    common = argparse.ArgumentParser(add_help=False)
    if not defaults:
        common.argument_default = argparse.SUPPRESS
    common.add_argument('--json', action='store_true',
                        help='print machine-readable JSON')
    common.add_argument('--config-file', action='append', metavar='FILE',
                        help='configuration file (default: /etc/ferryman/ferryman.conf)')
    common.add_argument('--timeout', type=float,
                        **({'default': 60.0} if defaults else {}),
                        help='seconds to wait for the conductor\'s answer')
    return common


def build_parser():
    common = _common_options(defaults=False)
    parser = argparse.ArgumentParser(
        prog='ferryman', parents=[_common_options(defaults=True)],
        description='Live-migrate guests between hypervisor hosts.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)

    def add(subparsers, name, func, help_text):
        p = subparsers.add_parser(name, parents=[common], help=help_text)
        p.set_defaults(func=func)
        return p

    add(sub, 'demo', cmd_demo, 'migrate one guest of each storage kind in a '
        'simulated three-host cloud, in this process')
    p = add(sub, 'sandbox', cmd_sandbox, 'run a private RabbitMQ, a conductor, '
            'simulated hosts and ferryman-api on loopback for the openstack '
            'client, until interrupted; then stop them and remove their files')
    p.add_argument('--hosts', type=positive, default=3, metavar='N',
                   help='simulated hosts (at least 2)')
    p.add_argument('--api-port', type=positive, metavar='PORT',
                   help='ferryman-api\'s port (default: a free one)')

    add(sub, 'audit', cmd_audit, 'check every guest runs on one host, resources '
        'are counted once, no migration is orphaned, nothing is left behind; exit '
        '1 on any violation')

    auth = sub.add_parser('auth', help='message signing keys').add_subparsers(
        dest='auth_command', metavar='ACTION', required=True)
    p = add(auth, 'new-secret', cmd_auth_new_secret, 'write a new conductor '
            'secret, readable by its owner alone')
    p.add_argument('--output', required=True, metavar='FILE')
    p.add_argument('--force', action='store_true', help='replace an existing '
                   'file (every agent key must then be derived again)')
    p = add(auth, 'agent-key', cmd_auth_agent_key, 'derive a host\'s agent key '
            'file from the conductor secret: HMAC-SHA256(secret, HOST)')
    p.add_argument('host')
    p.add_argument('--secret-file', metavar='FILE',
                   help='the conductor secret (default: [auth] secret_file of '
                        'the --config-file)')
    p.add_argument('--output', required=True, metavar='FILE')
    p = add(auth, 'operator-key', cmd_auth_operator_key, 'derive an operator\'s '
            'key file from the conductor secret: HMAC-SHA256(secret, '
            '"operator:" NAME); every request to the conductor is signed with it')
    p.add_argument('name')
    p.add_argument('--secret-file', metavar='FILE',
                   help='the conductor secret (default: [auth] secret_file of '
                        'the --config-file)')
    p.add_argument('--output', required=True, metavar='FILE')

    host = sub.add_parser('host', help='hypervisor hosts').add_subparsers(
        dest='host_command', metavar='ACTION', required=True)
    add(host, 'list', cmd_host_list, 'hosts with their resources')
    add(host, 'enable', cmd_host_enable, 'accept migrations again').add_argument(
        'host')
    p = add(host, 'disable', cmd_host_disable, 'accept no more migrations')
    p.add_argument('host')
    p.add_argument('--reason')
    p = add(host, 'force-down', cmd_host_force_down, 'count a host as down '
            'whatever its agent reports (as Nova\'s forced_down): nothing is '
            'scheduled there or live-migrated from it')
    p.add_argument('host')
    p.add_argument('--undo', action='store_true',
                   help='count it by its agent\'s reports again')
    p = add(host, 'drain', cmd_host_drain, 'disable a host and live-migrate every '
            'guest off it (importance high), with a progress bar and a summary of '
            'guests that could not move; exit 1 if any could not')
    p.add_argument('host')
    p.add_argument('--max-parallel', type=positive, metavar='N',
                   help='guests leaving the host at once (default: [conductor] '
                        'drain_max_per_host, 2)')
    p.add_argument('--no-wait', action='store_true',
                   help='return once the drain is recorded')

    drain = sub.add_parser('drain', help='host drains').add_subparsers(
        dest='drain_command', metavar='ACTION', required=True)
    add(drain, 'list', cmd_drain_list, 'drains, oldest first').add_argument(
        '--host')
    p = add(drain, 'show', cmd_drain_show, 'one drain, guest by guest')
    p.add_argument('drain')
    p.add_argument('--wait', action='store_true', help='follow it to its end')

    inst = sub.add_parser('instance', help='guests').add_subparsers(
        dest='instance_command', metavar='ACTION', required=True)
    add(inst, 'list', cmd_instance_list, 'guests and where they run').add_argument(
        '--host')

    p = add(sub, 'live-migrate', cmd_live_migrate, 'live-migrate a guest')
    p.add_argument('instance', help='uuid or unique name')
    p.add_argument('--host', help='destination (default: the scheduler picks)')
    p.add_argument('--force', action='store_true',
                   help='skip capacity checks on the given host')
    p.add_argument('--block-migration', default='auto',
                   help='auto (from the storage), true (copy disks) or false')
    p.add_argument('--importance', default='medium',
                   help='low, medium or high: with the guest\'s SLA class, how '
                        'hard the copy is pushed to finish')
    p.add_argument('--wait', action='store_true',
                   help='wait for the end, with a progress bar')

    p = add(sub, 'evacuate', cmd_evacuate, 'rebuild the guest of a dead (or forced-'
            'down) host on another host; local disks are rebuilt from its image '
            '(their contents are lost)')
    p.add_argument('instance', help='uuid or unique name')
    p.add_argument('--host', help='destination (default: the scheduler picks)')
    p.add_argument('--force', action='store_true',
                   help='skip capacity checks on the given host')
    p.add_argument('--wait', action='store_true', help='wait for the end')

    mig = sub.add_parser('migration', help='migrations').add_subparsers(
        dest='migration_command', metavar='ACTION', required=True)
    p = add(mig, 'list', cmd_migration_list, 'migrations, oldest first')
    p.add_argument('--instance')
    p.add_argument('--status')
    p.add_argument('--host', help='as source or destination')
    add(mig, 'show', cmd_migration_show, 'one migration').add_argument('migration')
    add(mig, 'tasks', cmd_migration_tasks, 'task history of a migration').add_argument(
        'migration')
    p = add(mig, 'force-complete', cmd_migration_force_complete,
            'finish now: post-copy where allowed, else pause the guest')
    p.add_argument('migration')
    p.add_argument('--wait', action='store_true', help='wait until it has ended')
    p = add(mig, 'abort', cmd_migration_abort,
            'stop a migration; the guest stays on its source')
    p.add_argument('migration')
    p.add_argument('--wait', action='store_true', help='wait until it has ended')

    flow = sub.add_parser('flow', help='flow pictures').add_subparsers(
        dest='flow_command', metavar='ACTION', required=True)
    for name, func, what, help_text in (
            ('show', cmd_flow_show, 'subtype', 'a subtype\'s flow'),
            ('states', cmd_flow_states, 'subtype',
             'a subtype\'s state machine: its statuses and the events between'),
            ('render', cmd_flow_render, 'migration',
             'a migration\'s flow coloured by the state each step reached')):
        p = add(flow, name, func, help_text)
        if what == 'subtype':
            p.add_argument('subtype', choices=states.KINDS)
        else:
            p.add_argument('migration')
        p.add_argument('--format', default='text',
                       choices=('text', 'dot', 'svg', 'png'))
        p.add_argument('--output', metavar='FILE')
    return parser


def _error_name(exc):
    # oslo.messaging re-raises a remote error as a subclass named <name>_Remote.
    name = type(exc).__name__
    return name[:-len('_Remote')] if name.endswith('_Remote') else name


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except exception.FerrymanError as exc:
        if args.json:
            _print_json({'error': _error_name(exc), 'message': exc.message})
        else:
            print('Error: %s' % exc.message, file=sys.stderr)
        return 2
    except Exception as exc:
        import oslo_messaging
        if isinstance(exc, oslo_messaging.MessagingTimeout):
            print('Error: the conductor did not answer within %s s (is '
                  'ferryman-conductor running and transport_url right?)'
                  % args.timeout, file=sys.stderr)
            return 3
        # Anything else is a failure to report, never a traceback to print.
        name, message = _unexpected(exc)
        if args.json:
            _print_json({'error': name, 'message': message})
        else:
            print('Error: %s: %s' % (name, message), file=sys.stderr)
        return 4


def _unexpected(exc):
    """(error name, its message) without any traceback: a remote error's
    message carries the conductor's traceback after its first line."""
    import oslo_messaging
    if isinstance(exc, oslo_messaging.RemoteError):
        name, message = exc.exc_type, str(exc.value)
    else:
        name, message = _error_name(exc), str(exc)
    lines = message.strip().splitlines()
    return name, (lines[0] if lines else '')


if __name__ == '__main__':
    sys.exit(main())
