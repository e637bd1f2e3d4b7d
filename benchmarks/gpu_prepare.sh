#!/usr/bin/env bash
# Run HERE, on the Debian development machine: packs into gpu-carry/carry.tar.xz (git-ignored, well
# under the device tool's 64 MiB) what the lent GPU machine lacks, so that the device tool can carry
# it: carry=["gpu-carry"]. Then, there:
#     bash benchmarks/gpu_remote.sh [gpu_vs_torch.py arguments]
# What the H200 machine was seen to have: Python 3.12 with Python.h, gcc 13, NumPy, PyTorch with
# CUDA, the NVIDIA Vulkan ICD under /usr/local/nvidia/share/vulkan/icd.d/. What it lacks, and what
# this script copies from this machine's Debian packages: OpenBLAS (library and cblas.h), glslc
# (with libshaderc), the Vulkan headers and loader, the glvnd libraries the NVIDIA ICD needs
# (without libGLdispatch/libGLX/libEGL, vkCreateInstance fails with VK_ERROR_INCOMPATIBLE_DRIVER),
# Debian 13's glslc for the cooperative-matrix shaders, and diffusers and pytest with what they
# import (wheels for the remote's Python, --target).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=gpu-carry
OUT=$(mktemp -d)/carry
PYV=${REMOTE_PYTHON_VERSION:-3.12}
LIBDIR=/usr/lib/x86_64-linux-gnu
mkdir -p "$OUT/lib" "$OUT/bin" "$OUT/include/vulkan" "$OUT/py"

missing=$(for p in glslc libshaderc1 libvulkan1 libvulkan-dev libopenblas0-pthread \
                   libopenblas-pthread-dev libglvnd0 libglx0 libegl1; do
              dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
    echo "installing: $missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# libraries: the real files under their sonames (cp -L follows the alternatives' symlinks)
for so in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libshaderc.so.1 libvulkan.so.1 \
          libGLdispatch.so.0 libGLX.so.0 libEGL.so.1 libOpenGL.so.0 libGL.so.1; do
    if [ -e "$LIBDIR/$so" ]; then cp -L "$LIBDIR/$so" "$OUT/lib/$so"; else echo "note: no $so here"; fi
done
ln -sf libopenblas.so.0 "$OUT/lib/libopenblas.so"       # for -lopenblas at link time
cp -L "$(command -v glslc)" "$OUT/bin/glslc"
strip --strip-unneeded "$OUT"/lib/*.so.* "$OUT/bin/glslc" 2>/dev/null || true
cp /usr/include/vulkan/*.h "$OUT/include/vulkan/"         # the C headers (not vulkan.hpp's)
[ -d /usr/include/vk_video ] && cp -r /usr/include/vk_video "$OUT/include/"
cp /usr/include/x86_64-linux-gnu/openblas-pthread/*.h "$OUT/include/"

# Debian 13's glslc for the GL_KHR_cooperative_matrix shaders (Debian 12's cannot compile them),
# with the C and C++ libraries and loader it needs (tools/debian_toolchain.py unpacks them):
# bin/glslc-coop runs it through the carried loader; gpu_remote.sh sets CCFG_GLSLC_COOP to it
python3 tools/debian_toolchain.py glslc >/dev/null
T=build/toolchain/root
mkdir -p "$OUT/coop-glslc"
for f in usr/bin/glslc usr/lib64/ld-linux-x86-64.so.2; do cp -L "$T/$f" "$OUT/coop-glslc/"; done
for so in libshaderc.so.1 libstdc++.so.6 libgcc_s.so.1 libc.so.6 libm.so.6; do
    cp -L "$T/usr/lib/x86_64-linux-gnu/$so" "$OUT/coop-glslc/"
done
strip --strip-unneeded "$OUT/coop-glslc/glslc" "$OUT/coop-glslc/libshaderc.so.1" 2>/dev/null || true
cat > "$OUT/bin/glslc-coop" <<'EOF'
#!/bin/sh
d="$(cd "$(dirname "$0")/../coop-glslc" && pwd)"
exec "$d/ld-linux-x86-64.so.2" --library-path "$d" "$d/glslc" "$@"
EOF
chmod +x "$OUT/bin/glslc-coop"

# diffusers (the version tested here) and pytest with everything they import that a torch
# install lacks: the closure of their requirements, from this environment's installed metadata
# with the markers evaluated for the remote (Linux x86_64, Python $PYV), numpy and torch left
# out (the remote has them). A fixed list missed huggingface_hub 2's new requirements (httpx2,
# click, ...): `import diffusers` failed without them. As wheels for the remote Python
# (installed there with --target, without dependency resolution).
PY=${PY:-.venv/bin/python}
pins=$("$PY" - "$PYV" <<'PYEOF'
import re
import sys
from importlib.metadata import PackageNotFoundError, requires, version
from packaging.requirements import Requirement
pyv = sys.argv[1]
env = {"python_version": pyv, "python_full_version": pyv + ".0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "extra": ""}
HAVE = {"numpy", "torch"}
found, todo = {}, ["diffusers", "pytest"]
while todo:
    name = re.sub(r"[-_.]+", "_", todo.pop()).lower()
    if name in found or name in HAVE:
        continue
    try:
        found[name] = version(name)
    except PackageNotFoundError:
        sys.exit(f"gpu_prepare.sh: {name} is required on the remote but not installed here")
    for r in requires(name) or []:
        req = Requirement(r)
        if req.marker is None or req.marker.evaluate(env):
            todo.append(req.name)
print(" ".join(f"{n}=={v}" for n, v in sorted(found.items())))
PYEOF
)
echo "wheels: $pins"
if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
        --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 --platform any -d "$OUT/wheels" $pins \
        > "$OUT/pip.log" 2>&1; then
    grep -v "^WARNING: Location" "$OUT/pip.log"
    echo "gpu_prepare.sh: a wheel for Python $PYV could not be fetched"; exit 1
fi
rm -f "$OUT/pip.log"
mkdir -p "$DEST"
tar -C "$(dirname "$OUT")" -cJf "$DEST/carry.tar.xz" carry
echo "$DEST/carry.tar.xz: $(du -h "$DEST/carry.tar.xz" | cut -f1) (unpacked $(du -sh "$OUT" | cut -f1))"
rm -rf "$(dirname "$OUT")"
