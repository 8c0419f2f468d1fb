"""Many programs at once over many sandboxes: the scheduler, its tasks, tools and stats."""
