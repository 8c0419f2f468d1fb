"""The engine: one session runs programs in a runtime and serves their tool calls on the host."""
