from tests.conftest import shared_data  # noqa: F401  (the fixture, for benchmarks run on their own)
