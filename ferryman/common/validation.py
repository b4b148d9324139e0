"""Checks of arguments that every layer takes from callers it does not trust."""

from ferryman.common import exception


def whole_number(name, value, least=1, most=None):
    """``value`` when it is a whole number from ``least`` (to ``most``); anything
    else, a bool or a float too, is refused naming the value."""
    if (isinstance(value, bool) or not isinstance(value, int) or value < least or
            (most is not None and value > most)):
        raise exception.InvalidArgument(
            name=name, value=value, reason=(
                'expected a whole number of at least %d' % least if most is None
                else 'expected a whole number from %d to %d' % (least, most)))
    return value
