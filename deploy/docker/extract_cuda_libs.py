"""Unpack the shared libraries of NVIDIA's CUDA pip wheels into one directory.

Used by Dockerfile.cuda's `cuda` stage and benches/gpu/package_gpu_libs.sh: every
`nvidia/<component>/lib/lib*.so*` (and TensorRT's `tensorrt_libs/lib*.so*`) of each wheel in
WHEEL_DIR is copied flat into DEST, which then goes on LD_LIBRARY_PATH. Fails when a library
ONNX Runtime's CUDA provider links against is missing.

usage: python extract_cuda_libs.py WHEEL_DIR DEST
"""

import fnmatch
import glob
import os
import shutil
import sys
import zipfile

# What libonnxruntime_providers_cuda.so 1.31.1 lists as NEEDED (besides the driver's libcuda).
REQUIRED = ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10"]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    wheel_dir, dest = sys.argv[1:]
    os.makedirs(dest, exist_ok=True)
    copied = []
    wheels = sorted(glob.glob(os.path.join(wheel_dir, "nvidia_*.whl")))
    wheels += sorted(glob.glob(os.path.join(wheel_dir, "tensorrt_*.whl")))
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                base = os.path.basename(name)
                in_lib = name.startswith("nvidia/") and "/lib/" in name
                in_lib = in_lib or name.startswith("tensorrt_libs/")
                if not in_lib or not fnmatch.fnmatch(base, "lib*.so*"):
                    continue
                with archive.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                    shutil.copyfileobj(src, out)
                copied.append(base)
    missing = [lib for lib in REQUIRED if lib not in copied]
    if missing:
        print(f"no {', '.join(missing)} in {wheel_dir}", file=sys.stderr)
        return 1
    print(f"extracted {len(copied)} libraries from {len(wheels)} wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
