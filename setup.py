"""Builds the C core as the extension ccfg._core (C11, OpenBLAS, -O3, warnings on)."""
import os
import shlex
import subprocess

import numpy as np
from setuptools import Extension, setup


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args, "openblas"], check=True,
                             capture_output=True, text=True).stdout
        return shlex.split(out)
    except (OSError, subprocess.CalledProcessError):
        return []


sources = sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".c"))
cflags = pkg_config("--cflags")
libs = pkg_config("--libs") or ["-lopenblas"]
extra_compile = ["-std=c11", "-O3", "-Wall", "-Wextra", "-fopenmp", "-fvisibility=hidden"]
extra_link = ["-fopenmp"]
# CCFG_SANITIZE=1 builds with AddressSanitizer and UBSan (run under LD_PRELOAD=libasan)
if os.environ.get("CCFG_SANITIZE"):
    extra_compile += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    extra_link += ["-fsanitize=address,undefined"]

setup(
    ext_modules=[Extension(
        "ccfg._core",
        sources=sources,
        include_dirs=[np.get_include(), "csrc"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION"), ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")],
        extra_compile_args=cflags + extra_compile,
        extra_link_args=libs + extra_link,
        depends=[os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".h")],
    )],
)
