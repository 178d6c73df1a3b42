import shutil

import pytest


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """``scratch()`` -> a new empty folder for one example (the previous example's is removed)."""
    root = tmp_path_factory.mktemp("fuzz")
    count = 0

    def fresh():
        nonlocal count
        shutil.rmtree(root / str(count), ignore_errors=True)
        count += 1
        (root / str(count)).mkdir()
        return root / str(count)

    return fresh
