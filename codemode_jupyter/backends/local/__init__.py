"""The local backend: a bubblewrap jail on this machine."""
