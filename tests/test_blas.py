"""OPENBLAS_THREAD_TIMEOUT is set for the CLI's process before OpenBLAS loads, a user's value is kept, and it
is not claimed once numpy is loaded (``ssl_pipeline.blas``)."""

import os
import subprocess
import sys

import pytest

from ssl_pipeline.blas import THREAD_TIMEOUT, VARIABLE

PROGRAM = """
import os, sys
if {numpy_first}:
    import numpy
from ssl_pipeline.blas import configure_blas_threads
returned = configure_blas_threads()
import numpy
print(returned, os.environ.get({variable!r}))
"""


@pytest.mark.parametrize(("numpy_first", "preset", "expected"), [
    (False, None, f"{THREAD_TIMEOUT} {THREAD_TIMEOUT}"),
    (False, "8", "8 8"),  # the user's setting wins
    (True, None, "None None"),  # too late: OpenBLAS has read its environment
])
def test_the_thread_timeout_is_set_before_openblas_loads_and_only_then(numpy_first, preset, expected):
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    if preset is not None:
        env[VARIABLE] = preset
    result = subprocess.run([sys.executable, "-c", PROGRAM.format(numpy_first=numpy_first, variable=VARIABLE)],
                            env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == expected.split()


def test_the_cli_configures_it_before_reading_the_config(monkeypatch):
    from ssl_pipeline import cli

    calls = []
    monkeypatch.setattr(cli, "configure_blas_threads", lambda: calls.append("blas"))
    monkeypatch.setattr(cli, "parse_command", lambda argv: calls.append("parse") or (_ for _ in ()).throw(
        cli.ConfigError("stop here")))
    assert cli.main(["run"]) == 2
    assert calls == ["blas", "parse"]
