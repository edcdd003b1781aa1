"""Builders and test doubles shared by several test modules (``from helpers.X import ...``;
``tests/`` is on ``sys.path`` through its rootdir conftest). Nothing here imports torch: the
runtime tests (Makefile RUNTIME_TESTS) use them under Python 3.8 and 3.10 too."""
