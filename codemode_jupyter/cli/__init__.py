"""The `codemode-jupyter` command: run, batch, serve."""
