"""Local stand-ins for Azure services the gateway calls, speaking their real REST contracts."""
