"""Shared test configuration: the Hypothesis profile and fixtures used across the suite."""

from __future__ import annotations

import os

from hypothesis import settings

# "ci" is the default; HYPOTHESIS_PROFILE=dev runs fewer examples while iterating.
settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# fixtures shared by the engine tests follow
