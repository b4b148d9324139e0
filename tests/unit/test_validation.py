"""The one whole-number check every layer uses, and the CLI's parse of it."""

import argparse

import pytest

from ferryman.cmd import cli
from ferryman.common import exception
from ferryman.common import validation


@pytest.mark.parametrize('value', [0, -1, True, 2.0, '2', None, 11])
def test_whole_number_refuses_naming_the_value(value):
    with pytest.raises(exception.InvalidArgument) as err:
        validation.whole_number('workers', value, 1, 10)
    assert repr(value) in str(err.value) and 'workers' in str(err.value)


def test_whole_number_range():
    assert validation.whole_number('hosts', 2, 2) == 2
    assert validation.whole_number('workers', 10, 1, 10) == 10
    with pytest.raises(exception.InvalidArgument, match='of at least 2'):
        validation.whole_number('hosts', 1, 2)
    with pytest.raises(exception.InvalidArgument, match='from 1 to 10'):
        validation.whole_number('workers', 0, 1, 10)


@pytest.mark.parametrize('text', ['0', '-3', '2.0', '+2', '02', 'two', ''])
def test_cli_option_refuses_what_is_not_written_as_a_whole_number(text):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        cli.positive(text)
    assert str(err.value) == ('invalid value %r: expected a whole number of at '
                              'least 1' % text)


def test_cli_option_takes_a_whole_number():
    assert cli.positive(' 3 ') == 3


@pytest.mark.parametrize('argv', [
    ['--config-file', 'a.conf', '--json', '--timeout', '5', 'host', 'list'],
    ['host', 'list', '--config-file', 'a.conf', '--json', '--timeout', '5'],
])
def test_cli_common_options_before_or_after_the_command(argv):
    # What `ferryman sandbox` prints: `ferryman --config-file FILE migration list`.
    args = cli.build_parser().parse_args(argv)
    assert (args.config_file, args.json, args.timeout) == (['a.conf'], True, 5.0)


def test_cli_common_options_default():
    args = cli.build_parser().parse_args(['host', 'list'])
    assert (args.config_file, args.json, args.timeout) == (None, False, 60.0)
