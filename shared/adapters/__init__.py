"""Implementations of the ports in `shared/ports.py`: Azure (Cosmos DB, Event Hubs, App Insights),
embedded (SQLite, in-process queue) and in-memory (tests)."""
