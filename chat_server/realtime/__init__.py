"""Real-time delivery: the WebSocket endpoint (ws), routing (hub), one socket's
ordered delivery (connection), presence, and the Redis relay between processes.
All of it speaks the frames of `chat_server.events`."""
