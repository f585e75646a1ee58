import os
import sys

import matplotlib

matplotlib.use("Agg")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

# Hypothesis budgets for tests/test_hostile.py (named profiles, applied there with a decorator, so the other test
# files keep their own explicit settings): "hostile-default" (the default run) 5 examples per test, derandomized
# so that the default suite is reproducible; MEANFIELD_HYPOTHESIS=thorough selects "hostile-thorough" with 500
# random examples per test (MEANFIELD_HYPOTHESIS_EXAMPLES=N overrides the number).
from hypothesis import HealthCheck, settings  # noqa: E402

_HOSTILE_HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
settings.register_profile("hostile-default", max_examples=5, deadline=None, derandomize=True,
                          suppress_health_check=_HOSTILE_HEALTH)
settings.register_profile("hostile-thorough", max_examples=int(os.environ.get("MEANFIELD_HYPOTHESIS_EXAMPLES", "500")),
                          deadline=None, suppress_health_check=_HOSTILE_HEALTH)


# Tests marked ``@pytest.mark.slow`` (long Monte-Carlo ladders, large property budgets) run only with MEANFIELD_SLOW=1,
# so that the default run stays within a few minutes on 2 cores: ``MEANFIELD_SLOW=1 python -m pytest -q`` runs all.
def pytest_collection_modifyitems(config, items):
    if os.environ.get("MEANFIELD_SLOW", "") == "1":
        return
    import pytest
    skip = pytest.mark.skip(reason="slow: set MEANFIELD_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
