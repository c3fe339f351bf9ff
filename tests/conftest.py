"""Shared test configuration.

Under CI (CI=true) hypothesis runs derandomized, so a run is reproducible and a red build
always means a change broke something; locally it explores new examples on every run.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")
