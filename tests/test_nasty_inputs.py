"""Replays the nasty inputs tools/fuzz_loaders.py kept (tests/data/nasty/TARGET/*): mutated
safetensors files, UNet config.json, sharded index, scheduler_config.json and classifier
config.json that once broke a loader. Each must load or raise ValueError/TypeError whose message
names what is wrong (a field, a tensor, the file) — never another exception type, an unnamed
message or a hang. tests/data/nasty/MANIFEST.json says what each one found; an entry with
"pending" names where its fix lives while that is not this tree (xfail until then)."""
import json
import os
import signal
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fuzz_loaders as F  # noqa: E402

MANIFEST = json.loads(open(os.path.join(F.NASTY, "MANIFEST.json")).read())
WORDS = F.field_words()
LIMIT_S = 20


def _cases():
    for rel, entry in sorted(MANIFEST.items()):
        marks = []
        if entry.get("pending"):
            # a hang or a memory blow-up is not even run while pending
            slow = any(k in entry["found"] for k in ("slow", "hang", "crash", "MemoryError"))
            marks.append(pytest.mark.xfail(reason=entry["pending"], strict=False,
                                           run=not slow))
        yield pytest.param(rel, entry, id=rel, marks=marks)


def test_every_kept_input_is_listed():
    kept = {os.path.relpath(os.path.join(d, f), F.NASTY)
            for d, _, files in os.walk(F.NASTY) for f in files
            if not os.path.relpath(d, F.NASTY).startswith("base") and f != "MANIFEST.json"}
    assert kept == set(MANIFEST)


@pytest.mark.parametrize("rel,entry", list(_cases()))
def test_nasty_input(rel, entry, tmp_path):
    data = F.read_kept(os.path.join(F.NASTY, rel))
    where = F.place(entry["target"], data, str(tmp_path))

    def alarm(signum, frame):
        raise F.Timeout(f"{rel} took more than {LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, LIMIT_S)
    exc = None
    try:
        F.load(entry["target"], where)
    except (ValueError, TypeError) as e:
        exc = e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    verdict = F.judge(exc, entry.get("named"), WORDS)
    assert verdict is None, f"{rel}: {verdict}: {exc}"
