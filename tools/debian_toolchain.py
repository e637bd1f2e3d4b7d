#!/usr/bin/env python3
"""Newer Debian tools for the cooperative-matrix shaders, unpacked into a private folder.

The cooperative-matrix convolution (shaders/nn_conv2d_coopk*.comp) is written for
GL_KHR_cooperative_matrix, which this machine's glslc (Debian 12, shaderc 2023.2) cannot compile,
and the only Vulkan driver without a GPU, lavapipe (Mesa 22.3 here), has no cooperative matrices.
Debian 13 has both: shaderc 2025.2 (trixie) and Mesa 26.1 (trixie-backports), whose lavapipe runs
VK_KHR_cooperative_matrix (8x8x8 float16 -> float32, subgroups of 8). This script downloads those
packages and their library dependencies from deb.debian.org, checks them against the archive's
signed InRelease (the debian-archive-keyring of this machine) and unpacks them with `dpkg -x`
into DEST/root, nothing installed system-wide. They need Debian 13's C library, so the wrappers it
writes start the programs through the unpacked dynamic loader:

    DEST/glslc           glslc 2025.2 (setup.py uses it for the shaders that need it)
    DEST/lavapipe-run    VENV/bin/python ARGS...: runs a virtual environment's Python with
                         Debian 13's loader and libraries and VK_DRIVER_FILES set to the
                         unpacked lavapipe (subprocesses started with sys.executable too)

Usage: python tools/debian_toolchain.py glslc|lavapipe [--dest build/toolchain]
Exit status 0 when the tool is ready (already or now), 1 with a message otherwise: callers (the
Makefile) treat a failure as "the cooperative-matrix path is not built / not tested here".
"""
import argparse
import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

MIRROR = "http://deb.debian.org/debian"
# Packages come from the first suite that has them: backports for Mesa 26.1
SUITES = ("trixie-backports", "trixie")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
TOOLS = {
    "glslc": ["glslc", "libc6"],
    "lavapipe": ["mesa-vulkan-drivers", "libvulkan1", "libc6"],
}
# never needed to run the unpacked programs (maintainer-script and data-only dependencies)
SKIP = {"debconf", "debconf-2.0", "dpkg", "perl-base", "libc-bin", "gcc-14-base", "libgcc1",
        "tzdata", "install-info", "libx11-data", "libdrm-common", "mesa-libgallium",
        "libc-gconv-modules-extra"}


# the lavapipe-run wrapper (write_wrappers fills in the @NAMES@)
LAVAPIPE_RUN = r"""#!/bin/sh
# lavapipe 26 (cooperative matrices) under Debian 13's loader; usage: lavapipe-run VENV/bin/python ARGS
set -e
venv=$(cd "$(dirname "$1")/.." && pwd); shift
real=$(readlink -f "$venv/bin/python")
# one shadow per virtual environment, its files replaced by rename: concurrent runs (several
# test sessions) never see a half-written interpreter script
shadow="@DEST@/venv-lavapipe-$(printf %s "$venv" | cksum | cut -d' ' -f1)"
mkdir -p "$shadow/bin"
if [ ! -e "$shadow/lib" ]; then
    ln -s "$venv/lib" "$shadow/lib.$$" && mv -T "$shadow/lib.$$" "$shadow/lib"
fi
cp "$venv/pyvenv.cfg" "$shadow/pyvenv.cfg.$$" && mv -f "$shadow/pyvenv.cfg.$$" "$shadow/pyvenv.cfg"
cat > "$shadow/bin/python.$$" <<EOF
#!/bin/sh
export VK_DRIVER_FILES="@DEST@/lvp_icd.json"
exec "@LOADER@" --library-path "$(dirname "$real")/../lib:@LIBS@:/usr/lib/@TRIPLET@" --argv0 "\$0" "$real" "\$@"
EOF
chmod +x "$shadow/bin/python.$$"
mv -f "$shadow/bin/python.$$" "$shadow/bin/python"
exec "$shadow/bin/python" "$@"
"""


def fetch(url):
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.read()


def gpg_checked_release(suite):
    """the InRelease text of `suite` after gpgv checked its signature"""
    data = fetch(f"{MIRROR}/dists/{suite}/InRelease")
    with tempfile.NamedTemporaryFile(suffix=".InRelease") as f:
        f.write(data)
        f.flush()
        r = subprocess.run(["gpgv", "--keyring", KEYRING, f.name], capture_output=True)
        if r.returncode:
            raise SystemExit(f"{suite}: InRelease signature not verified: {r.stderr.decode()}")
    return data.decode()


def packages_index(suite, arch):
    """{package: fields} of suite's main/binary-ARCH, its hash checked against InRelease"""
    release = gpg_checked_release(suite)
    rel = f"main/binary-{arch}/Packages.xz"
    want = None
    in_sha = False
    for line in release.splitlines():
        if line.startswith("SHA256:"):
            in_sha = True
        elif in_sha and line.startswith(" "):
            digest, _, name = line.split()
            if name == rel:
                want = digest
        else:
            in_sha = False
    if not want:
        raise SystemExit(f"{suite}: {rel} not listed in InRelease")
    data = fetch(f"{MIRROR}/dists/{suite}/{rel}")
    if hashlib.sha256(data).hexdigest() != want:
        raise SystemExit(f"{suite}: {rel} does not match InRelease's SHA256")
    index, cur, key = {}, {}, None
    for line in lzma.decompress(data).decode().splitlines() + [""]:
        if not line:
            if "Package" in cur:
                index.setdefault(cur["Package"], cur)
            cur, key = {}, None
        elif line[0] in " \t":
            continue
        else:
            key, _, value = line.partition(": ")
            cur[key] = value
    return index


def resolve(roots, indexes):
    """the packages (fields) roots need, dependencies first-alternative, from the first suite"""
    provides = {}
    for index in reversed(indexes):
        for name, fields in index.items():
            for pr in fields.get("Provides", "").split(","):
                pr = pr.strip().split(" ")[0]
                if pr:
                    provides[pr] = name
    todo, seen, out = list(roots), set(), []
    while todo:
        name = todo.pop()
        name = name if any(name in ix for ix in indexes) else provides.get(name, name)
        if name in seen or name in SKIP:
            continue
        fields = next((ix[name] for ix in indexes if name in ix), None)
        if fields is None:
            raise SystemExit(f"package {name} not found in {', '.join(SUITES)}")
        seen.add(name)
        out.append(fields)
        deps = fields.get("Depends", "") + "," + fields.get("Pre-Depends", "")
        for alt in deps.split(","):
            first = alt.split("|")[0].strip().split(" ")[0].split(":")[0]
            if first:
                todo.append(first)
    return out


def unpack(pkgs, root, cache):
    os.makedirs(cache, exist_ok=True)
    for fields in pkgs:
        path = os.path.join(cache, os.path.basename(fields["Filename"]))
        if not os.path.exists(path):
            data = fetch(f"{MIRROR}/{fields['Filename']}")
            if hashlib.sha256(data).hexdigest() != fields["SHA256"]:
                raise SystemExit(f"{fields['Filename']}: SHA256 differs from the signed index")
            with open(path + ".part", "wb") as f:
                f.write(data)
            os.replace(path + ".part", path)
        subprocess.run(["dpkg-deb", "-x", path, root], check=True)


def write_wrappers(dest, root, arch_triplet):
    loader = os.path.join(root, "usr/lib64/ld-linux-x86-64.so.2")
    libs = ":".join(os.path.join(root, d) for d in
                    (f"usr/lib/{arch_triplet}", f"lib/{arch_triplet}"))
    if os.path.exists(os.path.join(root, "usr/bin/glslc")):
        with open(os.path.join(dest, "glslc"), "w") as f:
            f.write(f'#!/bin/sh\nexec "{loader}" --library-path "{libs}" '
                    f'"{root}/usr/bin/glslc" "$@"\n')
        os.chmod(os.path.join(dest, "glslc"), 0o755)
    icd = os.path.join(root, f"usr/lib/{arch_triplet}/libvulkan_lvp.so")
    if os.path.exists(icd):
        with open(os.path.join(dest, "lvp_icd.json"), "w") as f:
            f.write('{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", '
                    '"api_version": "1.4.0"}}\n' % icd)
        # lavapipe-run VENV/bin/python ARGS: a shadow of the virtual environment whose
        # bin/python starts the same interpreter through Debian 13's loader, so that the
        # subprocesses a test starts with sys.executable get the same driver. The interpreter's
        # own lib folder comes first (its libpython, not the system's of the same name), the
        # system's libraries last (for what Debian 13's set lacks).
        script = LAVAPIPE_RUN
        for k, v in (("@DEST@", dest), ("@LOADER@", loader), ("@LIBS@", libs),
                     ("@TRIPLET@", arch_triplet)):
            script = script.replace(k, v)
        with open(os.path.join(dest, "lavapipe-run"), "w") as f:
            f.write(script)
        os.chmod(os.path.join(dest, "lavapipe-run"), 0o755)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tool", choices=sorted(TOOLS))
    ap.add_argument("--dest", default="build/toolchain")
    args = ap.parse_args()
    dest = os.path.abspath(args.dest)
    ready = os.path.join(dest, "glslc" if args.tool == "glslc" else "lavapipe-run")
    if os.path.exists(ready):
        print(ready)
        return 0
    try:
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                              text=True, check=True).stdout.strip()
        if arch != "amd64":
            raise SystemExit(f"only amd64 is handled (this is {arch})")
        if not shutil.which("gpgv") or not os.path.exists(KEYRING):
            raise SystemExit("gpgv and debian-archive-keyring are needed to check the downloads")
        indexes = [packages_index(s, arch) for s in SUITES]
        pkgs = resolve(TOOLS[args.tool], indexes)
        root = os.path.join(dest, "root")
        os.makedirs(root, exist_ok=True)
        unpack(pkgs, root, os.path.join(dest, "debs"))
        write_wrappers(dest, root, "x86_64-linux-gnu")
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"debian_toolchain {args.tool}: {e}")
    if not os.path.exists(ready):
        raise SystemExit(f"debian_toolchain {args.tool}: {ready} was not produced")
    print(ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
