"""Builds the C core as the extension ccfg._core (C11, OpenBLAS, -O3, warnings on).

The Vulkan backend (csrc/backend_vk.c) needs two things at build time: the Vulkan headers (types
only; libvulkan.so.1 is opened at run time) and glslc, which compiles shaders/*.comp to SPIR-V
headers under build/shaders/. If either is missing the extension is built with the CPU backend
alone (-DCCFG_NO_VULKAN) and ccfg.devices() says why. The shaders written for
GL_KHR_cooperative_matrix need a newer glslc than Debian 12's (see khr_coop_glslc); without one
they are left out (-DCCFG_NO_COOP_KHR) and the coop precision reports why.
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


KHR_COOP = "GL_KHR_cooperative_matrix"


def needs_khr_coop(src):
    """True if shader src (or a shaders/*.glsl it #includes) uses GL_KHR_cooperative_matrix"""
    text = open(src).read()
    for line in text.splitlines():
        if line.startswith("#include"):
            inc = os.path.join("shaders", line.split('"')[1])
            if os.path.exists(inc):
                text += open(inc).read()
    return KHR_COOP in text


def khr_coop_glslc(glslc):
    """a glslc that compiles GL_KHR_cooperative_matrix (shaderc >= 2023.8): CCFG_GLSLC_COOP, the
    one tools/debian_toolchain.py unpacks into build/toolchain (make setup fetches it), or the
    system's if it can; None if there is none"""
    probe = ("#version 450\n#extension " + KHR_COOP + " : require\n"
             "#extension GL_KHR_memory_scope_semantics : require\n"
             "#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require\n"
             "layout(local_size_x = 32) in;\nvoid main() {\n"
             "    coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA> a =\n"
             "        coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>(0.0);\n}\n")
    local = os.path.join("build", "toolchain", "glslc")
    for cand in (os.environ.get("CCFG_GLSLC_COOP"), local if os.path.exists(local) else None,
                 glslc):
        if not cand:
            continue
        try:
            subprocess.run([cand, "--target-env=vulkan1.2", "-fshader-stage=compute", "-", "-o",
                            os.devnull], input=probe, check=True, capture_output=True, text=True)
            return cand
        except (OSError, subprocess.CalledProcessError):
            continue
    return None


def compile_shaders():
    """shaders/X.comp -> build/shaders/X.spv.h (a {0x07230203, ...} initializer), when out of date.
    Returns (None on success, else the reason the Vulkan backend is left out; None, else the
    reason the GL_KHR_cooperative_matrix shaders are left out)."""
    glslc = shutil.which("glslc")
    if not glslc:
        return "glslc not found (install the glslc package)", None
    if not have_vulkan_headers():
        return "vulkan/vulkan.h not found (install libvulkan-dev)", None
    comps = sorted(glob.glob(os.path.join("shaders", "*.comp")))
    if not comps:
        return "shaders/*.comp not found next to setup.py", None
    os.makedirs(SHADER_OUT, exist_ok=True)
    coop_glslc, coop_missing = None, None
    coop_srcs = {src for src in comps if needs_khr_coop(src)}
    if coop_srcs:
        coop_glslc = khr_coop_glslc(glslc)
        if not coop_glslc:
            coop_missing = ("no glslc that compiles " + KHR_COOP + " (run python "
                            "tools/debian_toolchain.py glslc, or set CCFG_GLSLC_COOP)")
    # X.comp files are thin wrappers that #include shared X.glsl bodies: a shader is stale when
    # any of the bodies is newer than its compiled header
    bodies = glob.glob(os.path.join("shaders", "*.glsl"))
    newest_body = max((os.path.getmtime(b) for b in bodies), default=0.0)
    for src in comps:
        dst = os.path.join(SHADER_OUT, os.path.basename(src)[:-len(".comp")] + ".spv.h")
        compiler = glslc
        if src in coop_srcs:
            if not coop_glslc:
                if os.path.exists(dst):
                    os.remove(dst)      # never link a header of an older source
                continue
            compiler = coop_glslc
        if os.path.exists(dst) and os.path.getmtime(dst) >= max(os.path.getmtime(src), newest_body):
            continue
        cmd = [compiler, "--target-env=vulkan1.2", "-O", "-mfmt=c", src, "-o", dst]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"glslc failed on {src}: {' '.join(cmd)}")
    return None, coop_missing


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

vulkan_missing, coop_missing = compile_shaders()
if vulkan_missing:
    print(f"ccfg: building without the Vulkan backend: {vulkan_missing}")
    macros += [("CCFG_NO_VULKAN", f'"{vulkan_missing}"')]
elif coop_missing:
    print(f"ccfg: building without the cooperative-matrix convolution: {coop_missing}")
    macros += [("CCFG_NO_COOP_KHR", f'"{coop_missing}"')]
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
