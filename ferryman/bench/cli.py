"""ferryman-bench: the benchmarks, each printing its figures (``--json`` for
machines). Kept out of the operator's ``ferryman`` command: benchmarks start the
simulated cloud and test servers, which an operator's tool has no business loading.
"""

import argparse
import sys

from ferryman.bench import api as bench_api
from ferryman.bench import drain as bench_drain
from ferryman.bench import persistence as bench_persistence
from ferryman.bench import policy as bench_policy
from ferryman.cmd import cli
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception


def cmd_policy(args):
    conf = ferryman_conf.make_conf(config_files=args.config_file or [])
    bench_policy.run(conf, as_json=args.json)


def cmd_persistence(args):
    bench_persistence.run(migrations=args.migrations, as_json=args.json,
                          rabbitmq=args.rabbitmq)


def cmd_drain(args):
    report = bench_drain.run(hosts=args.hosts, guests=args.guests,
                             max_parallel=args.max_parallel,
                             max_cluster=args.max_cluster, workers=args.workers,
                             as_json=args.json, rabbitmq=args.rabbitmq,
                             agent_processes=args.agent_processes)
    return 0 if report['ok'] else 1


def cmd_api(args):
    report = bench_api.run(servers=args.servers, hosts=args.hosts,
                           samples=args.samples, clients=args.clients,
                           as_json=args.json)
    return 0 if report['ok'] else 1


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--json', action='store_true',
                        help='print machine-readable JSON')
    common.add_argument('--config-file', action='append', metavar='FILE',
                        help='configuration file for the policy benchmark')
    parser = argparse.ArgumentParser(
        prog='ferryman-bench', parents=[common],
        description='Benchmarks that print figures, measured side by side.')
    sub = parser.add_subparsers(dest='command', metavar='WHAT', required=True)

    def add(name, func, help_text):
        p = sub.add_parser(name, parents=[common], help=help_text)
        p.set_defaults(func=func)
        return p

    add('policy', cmd_policy, 'Nova\'s, KubeVirt\'s and Ferryman\'s convergence '
        'policies over one matrix of simulated guests')
    p = add('persistence', cmd_persistence, 'durable flows vs in-memory flows vs '
            'the bare RPC calls, one process, simulated driver')
    p.add_argument('--migrations', type=cli.positive, default=20,
                   help='migrations per mode')
    p.add_argument('--rabbitmq', action='store_true',
                   help='over a private RabbitMQ node, not the in-process transport')

    p = add('drain', cmd_drain, 'drain half of a simulated cloud\'s hosts at once, '
            'one conductor: migrations per second, request-to-completed times, '
            'CPU, peak RSS, overcommit check')
    p.add_argument('--hosts', type=cli.positive, default=100)
    p.add_argument('--guests', type=cli.positive, default=1000)
    p.add_argument('--max-parallel', type=cli.positive, default=2, metavar='N',
                   help='guests leaving one host at once')
    p.add_argument('--max-cluster', type=cli.positive, default=5, metavar='N',
                   help='migrations in flight in the cluster')
    p.add_argument('--workers', type=cli.positive, default=16, metavar='N',
                   help='flows the conductor runs at once')
    p.add_argument('--rabbitmq', action='store_true',
                   help='over a private RabbitMQ node, not the in-process transport')
    p.add_argument('--agent-processes', type=int, metavar='N',
                   help='processes the simulated agents run in (RabbitMQ only; '
                   'default 2 with --rabbitmq; 0: in the conductor\'s process)')
    p = add('api', cmd_api, 'ferryman-api vs bare RPC: p50/p99 of GET '
            '/servers/detail, GET /os-migrations and os-migrateLive, the API\'s '
            'own cost per call, and many clients at once')
    p.add_argument('--servers', type=cli.positive, default=1000)
    p.add_argument('--hosts', type=cli.positive, default=4)
    p.add_argument('--samples', type=cli.positive, default=100,
                   help='calls timed per figure (each os-migrateLive sample moves '
                   'two guests)')
    p.add_argument('--clients', type=cli.positive, default=200,
                   help='clients at once')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except exception.FerrymanError as exc:
        # A bad size: one line naming it, not a traceback.
        print('ferryman-bench: %s' % exc.message, file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
