"""Content safety: Azure AI Content Safety analysis of prompts and completions, and its settings."""
