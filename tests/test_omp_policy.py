"""ccfg imports its C core with libgomp's passive wait policy unless the user chose one, and
leaves the environment as it found it (ccfg/__init__.py, docs/PERFORMANCE.md "OpenMP wait
policy"). libgomp prints the policy it parsed at load time with OMP_DISPLAY_ENV=true."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import os, ccfg; print('LEFT', os.environ.get('OMP_WAIT_POLICY'), "
         "os.environ.get('GOMP_SPINCOUNT'))")


def run(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(extra, OMP_DISPLAY_ENV="verbose")
    res = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    shown = {}
    for ln in (res.stdout + res.stderr).splitlines():
        for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
            if ln.strip().startswith(key + " ="):
                shown[key] = ln.split("=", 1)[1].strip().strip("'")
    left = [ln for ln in res.stdout.splitlines() if ln.startswith("LEFT")]
    return shown, left[0].split()[1:]



def test_passive_by_default_and_environment_restored():
    policy, left = run()
    if not policy:
        pytest.skip("the OpenMP runtime does not print OMP_DISPLAY_ENV (not libgomp)")
    assert policy["OMP_WAIT_POLICY"] == "PASSIVE" and policy.get("GOMP_SPINCOUNT", "0") == "0"
    assert left == ["None", "None"]        # nothing left behind for subprocesses or torch


@pytest.mark.parametrize("extra,expect", [({"OMP_WAIT_POLICY": "active"}, "ACTIVE"),
                                          ({"GOMP_SPINCOUNT": "1000"}, "1000")])
def test_the_users_choice_is_kept(extra, expect):
    policy, left = run(**extra)
    if not policy:
        pytest.skip("the OpenMP runtime does not print OMP_DISPLAY_ENV (not libgomp)")
    if "OMP_WAIT_POLICY" in extra:
        assert policy["OMP_WAIT_POLICY"] == expect
    else:                                   # the user's spin count, not passive's 0
        assert policy.get("GOMP_SPINCOUNT") == expect
    assert left == [extra.get("OMP_WAIT_POLICY", "None"), extra.get("GOMP_SPINCOUNT", "None")]
