"""Fixtures of the hostile-input tests (see support.py)."""

from tests.hostile.support import producer as producer
from tests.hostile.support import tolerant_api as tolerant_api
