"""The simulated cloud: a conductor and agents with the simulated driver in one
process (the demo, unit tests, scale runs)."""
