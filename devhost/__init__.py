"""Local dev host: runs the same function app as Azure, with SQLite, a local queue and the AOAI simulator."""
