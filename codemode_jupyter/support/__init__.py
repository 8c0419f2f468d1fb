"""Small infrastructure shared by every layer: an event loop on a thread, work at exit."""
