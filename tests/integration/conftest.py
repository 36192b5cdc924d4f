# SPDX-License-Identifier: Apache-2.0
"""Fixtures for integration tests on the simulated node (see tests/testbed/__init__.py).

- ``node``: a fresh test bed per test (function scope), torn down even when
  the test fails. ``module_node``: one bed for a whole module. Use one or
  the other in a module, not both (two live beds cannot share a prefix).
- ``require_bed``: skip when the bed cannot be built here (not root, tools
  missing); with ``CI=true`` that is a failure instead, never a skip.
- ``build_dir``: $H2SPLIT_BUILD (default <repo>/build), for h2splitd/h2splitctl.
On failure, the tails of every bed process's log are added to the report.
"""

import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(TESTS_DIR)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import testbed  # noqa: E402


def _ci():
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def bed_unavailable(reason):
    """Skip (locally) or fail (CI=true) because the bed cannot run here."""
    if _ci():
        pytest.fail(f"{reason} (CI=true: integration tests must run, not skip)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def require_bed():
    try:
        testbed.check_environment()
    except testbed.TestbedError as e:
        bed_unavailable(str(e))


def _bed():
    n = testbed.Node()
    n.setup()
    return n


@pytest.fixture
def node(require_bed):
    n = _bed()
    try:
        yield n
    finally:
        n.teardown()


@pytest.fixture(scope="module")
def module_node():
    try:
        testbed.check_environment()
    except testbed.TestbedError as e:
        bed_unavailable(str(e))
    n = _bed()
    try:
        yield n
    finally:
        n.teardown()


@pytest.fixture(scope="session")
def build_dir():
    return os.environ.get("H2SPLIT_BUILD") or os.path.join(REPO_DIR, "build")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    for name in ("node", "module_node"):
        bed = getattr(item, "funcargs", {}).get(name)
        if isinstance(bed, testbed.Node):
            try:
                rep.sections.append((f"test bed logs ({name})", bed.logs()))
            except OSError:
                pass
