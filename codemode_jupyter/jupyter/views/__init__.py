"""What a person sees of a run: the live view, the saved transcript, displays, feeds."""
