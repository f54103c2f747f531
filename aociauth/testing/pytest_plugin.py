"""The pytest plugin of :mod:`aociauth.testing` (the ``pytest11`` entry point).

pytest loads this module in every run of every project that has aociauth
installed, so it imports nothing beyond pytest at load time.
"""
