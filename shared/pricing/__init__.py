"""Azure OpenAI price book and the cost of one usage record (see prices.json and cost.py)."""
