"""``python -m benchmarks.sync``: the live link's latency and capacity, on a real server.

Starts ``arclip serve`` as its own process on a loopback port (fresh data dir, the
configured model: u2netp on the CPU, or the GPU when there is one), then measures:

* capture → ``asset.created``: from sending ``POST /v1/captures`` (a 1280x960 JPEG) to the
  desktop's websocket receiving the message; p50/p95 over ``--runs``;
* paste → ``asset.placed``: from sending ``POST /v1/captures/{id}/paste`` (a 1080x1440
  simulated phone photo of the screen) to the desktop receiving it; p50/p95;
* idle sessions: ``--sessions`` websockets (a desktop and a phone per pairing) held open
  at once by the one server process, and the server's resident memory per connection.

Everything is on 127.0.0.1; nothing else is contacted.
"""
