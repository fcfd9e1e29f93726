"""The test suite writes only to temporary folders (runs last: tests/conftest.py orders it)."""

from conftest import repository_state


def test_the_suite_leaves_the_repository_as_it_found_it(repository_at_start):
    now = repository_state()
    assert now == repository_at_start, {
        "new": sorted(now - repository_at_start)[:20],
        "gone": sorted(repository_at_start - now)[:20],
    }
