"""Wiring only: the Function App, its HTTP trigger (the streaming proxy) and Event Hub trigger (the parser)."""

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
