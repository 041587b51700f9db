"""Quality benchmark: photo-like composites with exact ground-truth alpha, ours against rembg.

    python -m benchmarks.quality.build --out .bench/quality   # make the evaluation set (seeded)
    python -m benchmarks.quality                              # score ours and rembg on it
    python -m benchmarks.quality.build --source other         # the other-sources part (.bench/quality-other)

See ``benchmarks/quality/README.md``.
"""
