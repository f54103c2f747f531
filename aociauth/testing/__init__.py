"""In-process registry and token server for testing code that uses aociauth."""
