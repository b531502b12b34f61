"""The gateway's shared library: exchange format, normalization, tokens, ports and adapters.

Imports nothing from `proxy` or `parser`; both sides build on it.
"""
