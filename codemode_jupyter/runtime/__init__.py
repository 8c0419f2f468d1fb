"""The sandbox runtime: standard-library-only modules shipped into the sandbox and run there by
name (`python3 -I -u codemode_runtime.py`), never imported as this package inside it.

RUNTIME_FILES is the one list of them: the backends upload, mount or compile these files and
the replay fallback bundles them, so a new runtime module is added here and nowhere else.
"""

#: The files the sandbox needs, codemode_runtime.py (the script) importing the others.
RUNTIME_FILES = (
    "codemode_protocol.py",
    "codemode_rich.py",
    "codemode_channel.py",
    "codemode_control.py",
    "codemode_program.py",
    "codemode_baseline.py",
    "codemode_process.py",
    "codemode_runtime.py",
)
