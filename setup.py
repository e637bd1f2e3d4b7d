"""Builds the C core as the extension ccfg._core (C11, OpenBLAS, -O3, warnings on).

The Vulkan backend (csrc/backend_vk.c) needs two things at build time: the Vulkan headers (types
only; libvulkan.so.1 is opened at run time) and glslc, which compiles shaders/*.comp to SPIR-V
headers under build/shaders/. If either is missing the extension is built with the CPU backend
alone (-DCCFG_NO_VULKAN) and ccfg.devices() says why.
"""
import glob
import os
import shlex
import shutil
import subprocess

import numpy as np
from setuptools import Extension, setup

SHADER_OUT = os.path.join("build", "shaders")


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args, "openblas"], check=True,
                             capture_output=True, text=True).stdout
        return shlex.split(out)
    except (OSError, subprocess.CalledProcessError):
        return []


def have_vulkan_headers():
    """True if the C compiler finds <vulkan/vulkan.h>."""
    cc = shlex.split(os.environ.get("CC", "cc"))
    try:
        subprocess.run(cc + ["-fsyntax-only", "-x", "c", "-"], input="#include <vulkan/vulkan.h>\n",
                       check=True, capture_output=True, text=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def compile_shaders():
    """shaders/X.comp -> build/shaders/X.spv.h (a {0x07230203, ...} initializer), when out of date.
    Returns None on success, else the reason the Vulkan backend is left out."""
    glslc = shutil.which("glslc")
    if not glslc:
        return "glslc not found (install the glslc package)"
    if not have_vulkan_headers():
        return "vulkan/vulkan.h not found (install libvulkan-dev)"
    comps = sorted(glob.glob(os.path.join("shaders", "*.comp")))
    if not comps:
        return "shaders/*.comp not found next to setup.py"
    os.makedirs(SHADER_OUT, exist_ok=True)
    # X.comp files are thin wrappers that #include shared X.glsl bodies: a shader is stale when
    # any of the bodies is newer than its compiled header
    bodies = glob.glob(os.path.join("shaders", "*.glsl"))
    newest_body = max((os.path.getmtime(b) for b in bodies), default=0.0)
    for src in comps:
        dst = os.path.join(SHADER_OUT, os.path.basename(src)[:-len(".comp")] + ".spv.h")
        if os.path.exists(dst) and os.path.getmtime(dst) >= max(os.path.getmtime(src), newest_body):
            continue
        cmd = [glslc, "--target-env=vulkan1.2", "-O", "-mfmt=c", src, "-o", dst]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"glslc failed on {src}: {' '.join(cmd)}")
    return None


# the core (csrc/*.c), one file per guidance rule (csrc/rules/), the Python bindings (csrc/python/)
sources = sorted(glob.glob(os.path.join("csrc", "**", "*.c"), recursive=True))
headers = sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True))
cflags = pkg_config("--cflags")
libs = pkg_config("--libs") or ["-lopenblas"]
extra_compile = ["-std=c11", "-O3", "-Wall", "-Wextra", "-fopenmp", "-fvisibility=hidden"]
extra_link = ["-fopenmp", "-ldl"]
macros = [("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION"), ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")]
# CCFG_SANITIZE=1 builds with AddressSanitizer and UBSan (run under LD_PRELOAD=libasan)
if os.environ.get("CCFG_SANITIZE"):
    extra_compile += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    extra_link += ["-fsanitize=address,undefined"]

vulkan_missing = compile_shaders()
if vulkan_missing:
    print(f"ccfg: building without the Vulkan backend: {vulkan_missing}")
    macros += [("CCFG_NO_VULKAN", f'"{vulkan_missing}"')]
shader_headers = glob.glob(os.path.join(SHADER_OUT, "*.spv.h"))

setup(
    ext_modules=[Extension(
        "ccfg._core",
        sources=sources,
        include_dirs=[np.get_include(), "csrc", SHADER_OUT],
        define_macros=macros,
        extra_compile_args=cflags + extra_compile,
        extra_link_args=libs + extra_link,
        depends=headers + shader_headers,
    )],
)
