"""aociauth: Docker/OCI registry authentication for aiohttp (wired up as modules land)."""
