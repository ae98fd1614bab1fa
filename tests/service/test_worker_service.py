# SPDX-License-Identifier: GPL-3.0-or-later
"""`headcast serve` as the add-on runs it: a real process, real jobs, errors and cancel."""
import json
import queue
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from headcast.io import load_result

from .conftest import fast_env, headcast_cmd


class WorkerProcess:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.proc = subprocess.Popen(headcast_cmd("serve", *args), env=fast_env(tmp_path), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.put(json.loads(line))  # every stdout line must be JSON

    def send(self, **request) -> None:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def send_raw(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait_for(self, predicate, timeout: float = 300.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "the worker died"
                continue
            self.seen.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"no matching event within {timeout}s; seen {self.seen[-5:]}")

    def children(self) -> list[int]:
        pid = self.proc.pid
        kids = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            kids += [int(t) for t in text]
        return kids

    def close(self) -> int:
        if self.proc.poll() is None:
            self.send(cmd="shutdown")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.returncode


@pytest.fixture
def worker(tmp_path):
    w = WorkerProcess(tmp_path, "--model", "synthetic")
    yield w
    w.close()


def test_hello_job_progress_result_and_errors(worker, tmp_path, astronaut_png):
    worker.send(id="h", cmd="hello")
    hello = worker.wait_for(lambda e: e["event"] == "hello")
    assert hello["protocol"] == 1 and hello["device"] == "cpu" and {"reconstruct", "track"} <= set(hello["capabilities"])

    # bad requests answer at once and leave the worker usable
    worker.send_raw("{not json")
    assert worker.wait_for(lambda e: e["event"] == "error")["code"] == "bad_json"
    worker.send(id="u", cmd="fly")
    assert worker.wait_for(lambda e: e.get("id") == "u")["code"] == "unknown_command"

    out = tmp_path / "photo.headcast.npz"
    worker.send(id="job1", cmd="reconstruct", images=[str(astronaut_png)], output=str(out))
    assert worker.wait_for(lambda e: e.get("id") == "job1")["event"] == "accepted"
    progress = worker.wait_for(lambda e: e.get("id") == "job1" and e["event"] == "progress" and e["stage"] == "fit")
    assert {"frame", "total", "step", "loss", "elapsed", "eta"} <= set(progress)
    result = worker.wait_for(lambda e: e.get("id") == "job1" and e["event"] in ("result", "error"))
    assert result["event"] == "result" and Path(result["path"]) == out
    assert load_result(out).arrays["expression"].shape[0] == 1

    # failing jobs: each a clear error event naming the file, the worker carries on
    blank = tmp_path / "wall.png"
    import cv2
    cv2.imwrite(str(blank), np.full((200, 300, 3), 128, np.uint8))
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00\x01 definitely not a video" * 100)
    cases = {
        "missing": dict(cmd="reconstruct", images=[str(tmp_path / "nope.jpg")]),
        "noface": dict(cmd="reconstruct", images=[str(blank)]),
        "badvideo": dict(cmd="track", video=str(garbage)),
        "nomodel": dict(cmd="reconstruct", images=[str(astronaut_png)],
                        settings={"models.model": "flame", "models.flame": str(tmp_path / "FLAME" / "generic_model.pkl")}),
        "badargs": dict(cmd="track"),
    }
    for job_id, request in cases.items():
        worker.send(id=job_id, **request)
    errors = {}
    for job_id in cases:
        errors[job_id] = worker.wait_for(lambda e, j=job_id: e.get("id") == j and e["event"] in ("error", "result"))
    assert all(e["event"] == "error" for e in errors.values()), errors
    assert errors["missing"]["code"] == "missing_file" and errors["missing"]["file"].endswith("nope.jpg")
    assert errors["noface"]["code"] == "no_face" and errors["noface"]["file"].endswith("wall.png")
    assert errors["badvideo"]["code"] == "unreadable_media" and "broken.mp4" in errors["badvideo"]["file"]
    assert errors["nomodel"]["code"] == "model_error" and "generic_model.pkl" in errors["nomodel"]["file"]
    assert errors["badargs"]["code"] == "bad_input"
    worker.send(id="h2", cmd="hello")
    assert worker.wait_for(lambda e: e.get("id") == "h2")["event"] == "hello"
    assert worker.close() == 0


def test_cancel_mid_track_then_resume(worker, tmp_path, synthetic_clip_mp4):
    out = tmp_path / "clip.headcast.npz"
    worker.send(id="t", cmd="track", video=str(synthetic_clip_mp4), output=str(out))
    worker.wait_for(lambda e: e.get("id") == "t" and e["event"] == "progress" and e["stage"] == "online" and e["frame"] >= 3)
    t0 = time.monotonic()
    worker.send(id="c", cmd="cancel", job="t")
    worker.wait_for(lambda e: e.get("id") == "t" and e["event"] == "cancelled", timeout=10)
    assert time.monotonic() - t0 < 1.0, "cancel takes effect within a second"
    assert worker.children() == [], "no child processes left behind"
    partial = out.with_name(out.name + ".partial")
    kept = len(list(partial.glob("0*.npz")))
    assert kept >= 3 and not out.exists()
    worker.send(id="t2", cmd="track", video=str(synthetic_clip_mp4), output=str(out))
    first = worker.wait_for(lambda e: e.get("id") == "t2" and e["event"] == "progress" and e["stage"] == "online"
                            and e["loss"] is not None)
    assert first["frame"] >= kept, "the resumed job starts after the kept frames"
    done = worker.wait_for(lambda e: e.get("id") == "t2" and e["event"] in ("result", "error"))
    assert done["event"] == "result" and done["frames"] == 8
    assert not partial.exists()
