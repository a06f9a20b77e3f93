"""Contract suites: each port's interface, run against every implementation."""
