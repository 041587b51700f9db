"""Speed benchmark: arclip's server against ``rembg s`` (u2netp), over HTTP, on the same machine and images.

    python -m benchmarks.speed                  # the comparison: c=1 and c=4, ours and rembg, one after the other
    python -m benchmarks.speed --soak 500       # memory flatness: 500 requests (2 MP, c=4) to our server, RSS every 50
    python -m benchmarks.speed --profile        # in-process stage timings of our pipeline (no HTTP)

Images: deterministic 12 MP phone-like JPEGs (4032x3024, every third an
iPhone-style portrait with EXIF orientation 6), composited from Debian's
``mate-backgrounds`` photographs (procedural textures without them), written
to ``.bench/speed/`` (git-ignored) and reused while the recipe is unchanged.

Servers: ``arclip serve`` with a temporary ``ARCLIP_DATA_DIR`` and a key from
``arclip keys create``; ``rembg s --no-ui`` from its own virtual environment
(``.bench/rembg``, created with ``rembg[cli]`` and ``onnxruntime==1.25.1`` when
missing) with ``U2NET_HOME`` pointing at a copy of our packaged ``u2netp.onnx``
(md5-checked, so rembg never downloads). Each server runs alone; all traffic
stays on 127.0.0.1. Both return the full-size RGBA PNG cut-out.

Reported per server and concurrency: median and p95 latency, images/s,
output size, server CPU seconds per image (robust to a busy machine), peak RSS
of the server's process tree (sampled every 50 ms from /proc), and the CPU
other processes used meanwhile ("other load", in cores: non-zero means the
machine was shared and wall-clock figures are pessimistic for both). Every
reply is checked (PNG, RGBA, displayed size); one reply per image is fully
decoded and checked for colour-zeroed transparent pixels.
"""
