"""Test-wide settings: the suite never writes JAX's persistent compilation cache into the
user's home (`kinrl` commands run in-process here); `tests/test_runtime.py` turns it on in
a child process with its own folder."""

import os

os.environ["KINRL_COMPILATION_CACHE"] = "off"
