"""Shared set-up of the Python peer tests. scripts/test.sh builds the smoke dataset and passes
its location, the acs binary and the tiny model folder through the environment; a missing
variable is an error, not a skipped test."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def required_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests through scripts/test.sh", pytrace=False)
    return value
