"""Local dev host: runs the gateway's function app on this machine with embedded stores."""
