"""The transport a benchmark's simulated cloud runs on."""


def use(stack, overrides, rabbitmq):
    """With ``rabbitmq``, a private RabbitMQ node for the run (closed with
    ``stack``, its URL put in ``overrides``); else the in-process transport.
    Returns how the report names it."""
    if not rabbitmq:
        return 'in-process (kombu memory)'
    from ferryman.testing import servers  # only runs over RabbitMQ need it
    broker = stack.enter_context(servers.RabbitMQServer())
    overrides['transport_url'] = broker.url
    return 'RabbitMQ on loopback'
