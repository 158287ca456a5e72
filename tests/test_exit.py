"""Jobs end without the interpreter's teardown (offloadbench.env.exit_fast), but with everything an
exit must still do: the exit code, atexit handlers, temporary folders removed, buffered output."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import atexit, sys, tempfile
    from pathlib import Path
    from offloadbench.env import exit_fast

    out = Path(sys.argv[1])
    kept = tempfile.TemporaryDirectory(dir=out)  # removed by its weakref finalizer at exit
    (out / "tmpdir").write_text(kept.name)
    atexit.register(lambda: (out / "atexit").write_text("ran"))

    class Teardown:  # freed only when the interpreter clears this module
        def __del__(self):
            (out / "teardown").write_text("ran")

    keep = Teardown()
    sys.stdout.write("buffered, no newline")
    sys.stderr.write("to stderr")
    if sys.argv[2] == "fast":
        exit_fast(3)
    sys.exit(3)
    """
)


@pytest.mark.parametrize("how", ["fast", "normal"])
def test_exit_fast_keeps_what_an_exit_does_and_skips_the_teardown(tmp_path, how):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, str(script), str(out), how], capture_output=True, text=True)
    assert proc.returncode == 3
    assert proc.stdout == "buffered, no newline" and proc.stderr == "to stderr"
    assert (out / "atexit").read_text() == "ran"
    assert not (tmp_path / (out / "tmpdir").read_text()).exists(), "the temporary folder was left behind"
    # the interpreter's teardown (what takes 1.2-1.4 s after transformers is imported) is skipped
    assert (out / "teardown").exists() == (how == "normal")


def test_exit_fast_of_none_is_success(tmp_path):
    code = "from offloadbench.env import exit_fast; exit_fast(None)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
