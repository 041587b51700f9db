"""Settings, the app factory and lifespan (the composition root), HTTP/websocket routes, errors, CLI."""
