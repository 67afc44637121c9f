"""What the tests and the benchmarks share: provisioning the services, free ports, process facts, generated feeds.

Not part of the service (it is not installed); `bench/` uses this, never `tests/`."""
