"""`%codemode COMMAND`: the commands, their parsers and help."""
