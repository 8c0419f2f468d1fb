"""`%config CodeMode.x = ...` in a real kernel: a bad value is refused where it is set (a
TraitError naming the setting), and the setting keeps the value it had."""

from __future__ import annotations

import pytest
from conftest import loaded_kernel

from codemode_jupyter.backends import BACKENDS

BAD = [
    ("timeout", "-1", "finite number above 0"),
    ("timeout", "float('inf')", "finite number above 0"),
    ("timeout", "float('nan')", "finite number above 0"),
    ("max_tool_calls", "0", "1 or more"),
    ("max_output", "-5", "1 or more"),
    ("memory_mb", "0", "1 or more"),
    ("view_output_chars", "0", "1 or more"),
    ("view_updates_per_second", "0", "finite number above 0"),
    ("daytona_auto_stop_minutes", "-1", "0 or more"),
    ("backend", "'nowhere'", ", ".join(BACKENDS)),
]


def test_bad_settings_are_refused_and_the_old_value_stays() -> None:
    with loaded_kernel() as kernel:
        before = kernel.execute(
            "from codemode_jupyter.jupyter.config import CodeMode\n"
            "s = [c for c in get_ipython().configurables "
            "if isinstance(c, CodeMode)][0]\n"
            "s.timeout, s.max_tool_calls, s.backend"
        )
        assert before.ok, before.messages
        for name, value, says in BAD:
            # %config reports a configurable's error on stderr (IPython logs it).
            said = kernel.execute(f"%config CodeMode.{name} = {value}").stream("stderr")
            assert f"CodeMode.{name} must be" in said and says in said, (name, said)
            raised = kernel.execute(f"s.{name} = {value}")
            assert raised.reply["content"]["ename"] == "TraitError", (name, raised.messages)
        after = kernel.execute("s.timeout, s.max_tool_calls, s.backend")
        assert after.result == before.result
        good = kernel.execute("%config CodeMode.timeout = 5\ns.timeout")
        assert good.ok and kernel.execute("s.timeout").result == "5.0"
        assert kernel.execute("%%codemode\n1 + 1").result == "2"  # settings still usable


@pytest.mark.parametrize("name", BACKENDS)
def test_every_registered_backend_is_accepted(name: str) -> None:
    from codemode_jupyter.jupyter.config import CodeMode

    settings = CodeMode()
    settings.backend = name
    assert settings.backend == name
