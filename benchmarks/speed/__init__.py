"""Speed benchmark: arclip's server against ``rembg s`` (u2netp), over HTTP, on the same machine and images.

    python -m benchmarks.speed                  # the comparison: c=1 and c=4, ours and rembg, one after the other
    python -m benchmarks.speed --soak 500       # memory flatness: 500 requests (2 MP, c=4) to our server, RSS every 50
    python -m benchmarks.speed --profile        # in-process stage timings of our pipeline (no HTTP)

Images: deterministic 12 MP phone-like JPEGs (4032x3024, every third an
iPhone-style portrait with EXIF orientation 6), written to ``.bench/speed/``
(git-ignored) and reused while the recipe is unchanged. Three sets by default
(``unsure.py``): composites like ``benchmarks/quality``'s, sorted by the server's
own engine into "unsure" (every photo gets the CPU default's extra views: the
worst case) and "sure" (none does), and "mix" (the quality set's share, 30 %,
unsure). Each runs with every ``quality=`` (fast, balanced, best); rembg once per
set; ratios pair both on the same photos in the same run. ``--sets blobs``: the
earlier procedural photos (``images.py``).

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
