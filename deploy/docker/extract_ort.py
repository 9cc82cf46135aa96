"""Unpack the ONNX Runtime shared libraries from a PyPI wheel into a directory.

Used by the Dockerfile's `ort` stage. Works for the CPU wheel (`onnxruntime`) and the GPU wheel
(`onnxruntime-gpu`, which adds the CUDA/TensorRT provider libraries): every
`onnxruntime/capi/libonnxruntime*.so*` is copied, the Python extension is not. A version-free
`libonnxruntime.so` link is made so `ORT_DYLIB_PATH` does not change with the version.

usage: python extract_ort.py WHEEL DEST VERSION
"""

import fnmatch
import os
import shutil
import sys
import zipfile


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    wheel, dest, version = sys.argv[1:]
    os.makedirs(dest, exist_ok=True)
    copied = []
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            base = os.path.basename(name)
            if not name.startswith("onnxruntime/capi/"):
                continue
            if not fnmatch.fnmatch(base, "libonnxruntime*.so*"):
                continue
            with archive.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                shutil.copyfileobj(src, out)
            copied.append(base)
    main_lib = f"libonnxruntime.so.{version}"
    if main_lib not in copied:
        print(f"{wheel} has no onnxruntime/capi/{main_lib}", file=sys.stderr)
        return 1
    link = os.path.join(dest, "libonnxruntime.so")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(main_lib, link)
    print("extracted:", ", ".join(sorted(copied)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
