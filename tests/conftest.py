"""Shared fixtures. Each fixture module is owned by the part it exercises."""

pytest_plugins = [
    "tests.fixtures.hostpath",  # before cluster, which imports it
    "tests.fixtures.cluster",
    "tests.fixtures.lab",
    "tests.fixtures.agent",
    "tests.fixtures.operator",
    "tests.fixtures.chart",
    "tests.fixtures.images",
]
