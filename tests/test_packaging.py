"""Packaging: license and citation metadata, and a source distribution that builds the Vulkan backend.

The sdist test builds ``python -m build --sdist --no-isolation`` from the repository, checks that
the tarball carries the C core, the shaders, LICENSE and CITATION.cff, installs it into a fresh
virtual environment without network (numpy and setuptools come from the running interpreter's
environment) and imports the installed package from outside the repository: ``ccfg.devices()``
must list a Vulkan device whenever the in-repo build has one.
"""
from __future__ import annotations

import fnmatch
import json
import os
import pathlib
import re
import site
import subprocess
import sys
import sysconfig
import tarfile

import pytest

import ccfg

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _toml(path):
    try:
        import tomllib
    except ModuleNotFoundError:          # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(path, "rb") as f:
        return tomllib.load(f)


def test_pyproject_declares_the_license():
    project = _toml(ROOT / "pyproject.toml")["project"]
    lic = project.get("license")
    assert lic == "MIT" or (isinstance(lic, dict) and lic.get("text") == "MIT"), lic
    if isinstance(lic, str):            # PEP 639: the SPDX form names its files
        assert "LICENSE" in project.get("license-files", [])
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the ccfg developers" in text
    assert project.get("authors"), "pyproject.toml: no authors"


def test_citation_names_the_ccfg_paper():
    text = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert re.search(r"^cff-version: 1\.2\.0$", text, flags=re.M)
    assert re.search(r"^preferred-citation:$", text, flags=re.M)
    preferred = text.split("preferred-citation:", 1)[1]
    assert "2411.17077" in preferred
    assert "Contrastive CFG" in preferred


def _run(cmd, cwd, env=None, timeout=900):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, (f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n"
                                 f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res.stdout


def _clean_env():
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV", "VIRTUAL_ENV"):
        env.pop(key, None)
    return env


def test_sdist_carries_shaders_and_builds_the_vulkan_backend(tmp_path):
    pytest.importorskip("build", reason="the 'build' package (dev extra) is not installed")
    pytest.importorskip("pip", reason="pip is not installed")

    # 1. the sdist, from the repository (the dependency check is skipped: building an sdist
    #    needs setuptools only, not the 'wheel' package listed in build-system.requires)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check",
          "-o", dist, ROOT], cwd=ROOT, env=_clean_env())
    tarballs = sorted(dist.glob("ccfg-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    sdist = tarballs[0]
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    top = names[0].split("/", 1)[0]
    rel = {n.split("/", 1)[1] for n in names if "/" in n}

    for pattern in ("shaders/*.comp", "shaders/*.glsl", "csrc/*.c", "csrc/*.h", "csrc/rules/*.[ch]",
                    "csrc/python/*.[ch]"):
        wanted = {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern)}
        assert wanted, f"the repository has no {pattern}"
        assert wanted <= rel, f"sdist lacks {sorted(wanted - rel)}"
        assert fnmatch.filter(rel, pattern)
    for name in ("LICENSE", "CITATION.cff", "README.md", "setup.py", "pyproject.toml",
                 "shaders/README.md", "docs/methods.md"):
        assert name in rel, f"sdist lacks {name}"
    assert not [n for n in rel if n.startswith("build/") or n.endswith((".so", ".o", ".pyc"))], \
        "sdist carries build outputs"
    assert top.startswith("ccfg-")

    # 2. a fresh venv that sees the running interpreter's packages (numpy, setuptools, pip)
    #    without network: --system-site-packages covers a system interpreter; when this
    #    interpreter is itself a venv its site-packages are added with a .pth file (plain paths,
    #    appended after the new venv's own site-packages, so the installed ccfg comes first).
    #    --without-pip: ensurepip would also put its own, older setuptools first on the path.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv],
         cwd=tmp_path, env=_clean_env())
    vpy = venv / "bin" / "python"
    vsite = pathlib.Path(_run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              cwd=tmp_path, env=_clean_env()).strip())
    outer = []
    for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"],
              sysconfig.get_paths()["platlib"]]:
        if p not in outer and os.path.isdir(p):
            outer.append(p)
    (vsite / "_ccfg_test_outer_env.pth").write_text("\n".join(outer) + "\n", encoding="utf-8")

    # 3. install the sdist: no index, no dependencies, no build isolation, and never touch the
    #    running environment's own ccfg (--ignore-installed)
    _run([vpy, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation",
          "--ignore-installed", sdist], cwd=tmp_path, env=_clean_env())

    # 4. the installed package, imported from outside the repository
    probe = ("import json, ccfg; print(json.dumps({'file': ccfg.__file__, "
             "'devices': [dict(d) for d in ccfg.devices()]}))")
    out = json.loads(_run([vpy, "-c", probe], cwd=tmp_path, env=_clean_env()).strip().splitlines()[-1])
    assert pathlib.Path(out["file"]).resolve().is_relative_to(venv.resolve()), out["file"]

    here = [d for d in ccfg.devices() if d["backend"] == "vulkan" and "index" in d]
    if not here:
        pytest.skip("the in-repo build has no Vulkan device, so the installed one cannot be "
                    f"expected to have one: {[dict(d) for d in ccfg.devices()]}")
    installed = [d for d in out["devices"] if d["backend"] == "vulkan" and "index" in d]
    assert installed, f"the package installed from the sdist has no Vulkan device: {out['devices']}"
