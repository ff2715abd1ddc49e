from tests.conftest import test_data  # noqa: F401  (the fixture, for benchmarks run on their own)
