"""benchmarks/gpu_vs_torch.py runs every row at smoke sizes (on lavapipe and torch CPU here), its
correctness checks pass, and without a GPU its full mode skips cleanly. Times are not asserted."""
import os
import subprocess
import sys

import pytest

import ccfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_vs_torch.py")
VK = [d for d in ccfg.devices() if d["backend"] == "vulkan" and "index" in d and d["available"]]


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)


@pytest.mark.skipif(not VK, reason="no Vulkan device")
def test_smoke_runs_every_row_and_its_checks_pass():
    pytest.importorskip("diffusers")
    r = run("--smoke", "--profile")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "MISMATCH" not in out and out.count("check ") >= 8
    for row in ("round trip", "CCFG per step", "PerpNeg per step", "DNG per step",
                "mixture CCFG d=2", "mixture CCFG d=64", "forward, 4 rows fp32",
                "Fashion-MNIST CCFG DDIM"):
        assert row in out, row
    assert "profile, one UNet forward" in out and "nn_conv2d" in out
    # the UNet section again in fp16 (a subprocess) where the device has 16-bit storage
    if "fp16" in VK[0].get("precisions", []):
        assert "fp16 vs torch fp32" in out and "forward, 4 rows fp16 (torch bf16)" in out
        assert "nn_conv2d_f16" in out


def test_full_mode_skips_without_a_gpu():
    gpu = [d for d in VK if d["type"] in ("discrete", "integrated")]
    torch = pytest.importorskip("torch")
    if gpu and torch.cuda.is_available():
        pytest.skip("a GPU is here: the full run is a benchmark, not a test")
    r = run("--only", "transfers")
    assert r.returncode == 0 and r.stdout.startswith("skipped:"), r.stdout + r.stderr


# --- benchmarks/gpu_remote.sh, the one-shot run on a lent GPU: every step it names must exist and
# accept its flags, so that an edit cannot waste the GPU's 15 minutes (its DRY_RUN=1 prints the
# steps' command lines without running anything). Cheap: one bash per part and mode, one Python
# that parses every benchmark's arguments, a listing of the carry when there is one.
import re  # noqa: E402
import shlex  # noqa: E402

REMOTE = os.path.join(ROOT, "benchmarks", "gpu_remote.sh")
PY_MARK = "PYTHON-FOR-THE-STEPS"

# parses each (script, argv) with the script's own argparse, stopping right after parse_args: an
# unknown flag or a bad value exits 2 (argparse's error), which is reported; nothing runs
PARSE_ONLY = r"""
import argparse, json, os, runpy, sys
sys.path.insert(0, os.path.join(sys.argv[1], "benchmarks"))
class Parsed(Exception):
    pass
real = argparse.ArgumentParser.parse_args
def parse_args(self, args=None, namespace=None):
    real(self, args, namespace)
    raise Parsed()
argparse.ArgumentParser.parse_args = parse_args
bad = []
for script, argv in json.loads(sys.stdin.read()):
    sys.argv = [script] + argv
    try:
        runpy.run_path(script, run_name="__main__")
        bad.append(f"{script} {argv}: ran past its argument parser")
    except Parsed:
        pass
    except SystemExit as e:
        bad.append(f"{script} {argv}: exit {e.code}")
    except Exception as e:
        bad.append(f"{script} {argv}: {type(e).__name__}: {e}")
print(json.dumps(bad))
"""


def dry_run(part, rehearse):
    env = dict(os.environ, DRY_RUN="1", PART=str(part), REHEARSE="1" if rehearse else "0",
               PY=PY_MARK)
    r = subprocess.run(["bash", REMOTE, "--profile"], capture_output=True, text=True, timeout=60,
                       env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    steps = re.findall(r"^== (.*)\n   command: (.*)$", r.stdout, re.M)
    return [(title, shlex.split(cmd)) for title, cmd in steps]


def split_step(argv):
    """(environment assignments, the words after the Python)"""
    env = {}
    if argv[0] == "env":
        argv = argv[1:]
        while "=" in argv[0]:
            k, v = argv.pop(0).split("=", 1)
            env[k] = v
    assert argv[0] == PY_MARK, argv
    return env, argv[1:]


def test_gpu_remote_scripts_parse():
    for name in ("gpu_remote.sh", "gpu_prepare.sh", "gpu_rehearse.sh"):
        r = subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", name)],
                           capture_output=True, text=True)
        assert r.returncode == 0, name + r.stderr


def test_gpu_remote_steps_exist_and_their_flags_parse():
    runs = {(part, rehearse): dry_run(part, rehearse) for part in (1, 2)
            for rehearse in (False, True)}
    jobs, switches = [], set()
    for (part, rehearse), steps in runs.items():
        assert len(steps) >= 6, (part, steps)
        for title, argv in steps:
            env, words = split_step(argv)
            switches.update(env)
            if words[:2] == ["-m", "pytest"]:
                files = [w for w in words if w.endswith(".py")]
                assert files, title
                for f in files:
                    assert os.path.isfile(os.path.join(ROOT, f)), f"{title}: {f} missing"
            else:
                script = os.path.join(ROOT, words[0])
                assert words[0].startswith("benchmarks/") and os.path.isfile(script), title
                jobs.append((script, words[1:]))
    # the rehearsal runs the same steps, the same scripts, in the same order as the real run
    for part in (1, 2):
        real = [split_step(a)[1][0] for _, a in runs[part, False]]
        assert real == [split_step(a)[1][0] for _, a in runs[part, True]], part
    # every switch a step sets is one the code reads (a typo would silently measure nothing)
    src = ""
    for d in ("csrc", "ccfg"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, d)):
            for n in names:
                if n.endswith((".c", ".h", ".py")):
                    with open(os.path.join(dirpath, n), errors="replace") as f:
                        src += f.read()
    for var in switches:
        assert f'"{var}"' in src, f"{var} is read nowhere in csrc/ or ccfg/"
    import json
    r = subprocess.run([sys.executable, "-c", PARSE_ONLY, ROOT], input=json.dumps(jobs),
                       capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [], r.stdout + r.stderr[-3000:]


def test_the_carry_holds_what_gpu_remote_uses():
    tarball = os.path.join(ROOT, "gpu-carry", "carry.tar.xz")
    if not os.path.exists(tarball):
        pytest.skip("no gpu-carry/carry.tar.xz here (bash benchmarks/gpu_prepare.sh makes it)")
    # the device tool carries 64 MiB in all, the working tree (tracked files) included
    tree = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=ROOT)
    tracked = sum(os.path.getsize(os.path.join(ROOT, f)) for f in tree.stdout.decode().split("\0")
                  if f and os.path.isfile(os.path.join(ROOT, f))) if tree.returncode == 0 else 0
    assert os.path.getsize(tarball) + tracked < 60 << 20, (os.path.getsize(tarball), tracked)
    r = subprocess.run(["tar", "-tJf", tarball], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    have = set(r.stdout.split())
    with open(REMOTE) as f:
        remote = f.read()
    used = set(re.findall(r'\$C/([\w./+-]+)', remote))
    assert {"lib/libvulkan.so.1", "bin/glslc-coop"} <= used
    for p in used - {"py"}:
        p = "carry/" + p.rstrip("/")
        assert p in have or p + "/" in have, f"gpu_remote.sh uses {p}, not in the carry"
    for p in ("carry/bin/glslc", "carry/coop-glslc/glslc", "carry/include/vulkan/vulkan.h",
              "carry/include/cblas.h", "carry/lib/libopenblas.so", "carry/lib/libGLX.so.0",
              "carry/lib/libEGL.so.1", "carry/lib/libGLdispatch.so.0"):
        assert p in have, p
    assert any(re.match(r"carry/wheels/diffusers-.*\.whl$", p) for p in have)
    assert any(re.match(r"carry/wheels/pytest-.*\.whl$", p) for p in have)


# what a PyTorch install brings (torch's own requirements and theirs): the remote has them
REMOTE_HAS = {"numpy", "torch", "triton", "sympy", "mpmath", "networkx", "jinja2", "markupsafe",
              "setuptools", "filelock", "fsspec", "typing_extensions"}


def test_the_carried_wheels_are_closed_under_their_requirements(tmp_path):
    """Every requirement of every carried wheel (markers evaluated for the remote: Linux x86_64,
    Python 3.12) is carried too or comes with torch: the wheels are installed there with
    --no-deps, and a missing one (huggingface_hub 2's httpx2) made `import diffusers` fail."""
    import zipfile
    requirements = pytest.importorskip("packaging.requirements")
    tarball = os.path.join(ROOT, "gpu-carry", "carry.tar.xz")
    if not os.path.exists(tarball):
        pytest.skip("no gpu-carry/carry.tar.xz here (bash benchmarks/gpu_prepare.sh makes it)")
    r = subprocess.run(["tar", "-C", str(tmp_path), "-xJf", tarball, "carry/wheels"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    norm = lambda n: re.sub(r"[-_.]+", "_", n).lower()  # noqa: E731
    env = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "extra": ""}
    wheels = sorted((tmp_path / "carry" / "wheels").glob("*.whl"))
    carried = {norm(w.name.split("-")[0]) for w in wheels}
    missing = []
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            text = z.read(meta).decode()
        for line in text.splitlines():
            if line.startswith("Requires-Dist:"):
                req = requirements.Requirement(line.split(":", 1)[1].strip())
                if req.marker is not None and not req.marker.evaluate(env):
                    continue
                n = norm(req.name)
                if n not in carried and n not in REMOTE_HAS and not n.startswith("nvidia_"):
                    missing.append(f"{w.name} needs {req}")
    assert not missing, missing
    assert {"diffusers", "huggingface_hub", "pytest"} <= carried, sorted(carried)
