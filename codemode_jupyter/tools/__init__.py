"""Tools: plain callables made tools (signature, validation, stubs, prompt) and the values
they return."""
