"""The streaming proxy: the HTTP trigger's side of the gateway."""
