"""The shared library: errors, configuration, RPC and its authentication, the
wire schemas. It imports nothing of the services, the simulated cloud, the
benchmarks or the test harness."""
