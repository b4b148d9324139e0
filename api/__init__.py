"""ferryman-api: the Nova-compatible compute API in front of the conductor.

It holds no state of its own: every request becomes calls through
``conductor.rpcapi``.
"""
