"""The parser function: turns stored exchanges into validated usage records (see parser/handler.py)."""
