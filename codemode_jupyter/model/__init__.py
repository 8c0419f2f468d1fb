"""The data of a run: results, events, the timeline, and how values are written as text."""
