"""The Daytona backend: runtimes in Daytona sandboxes through the official SDK."""
