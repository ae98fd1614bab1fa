# SPDX-License-Identifier: GPL-3.0-or-later
"""The JSON-lines worker protocol with stand-in job handlers (the real pipeline is tested elsewhere)."""
import io
import json
import time

from headcast.errors import NoFaceError
from headcast.worker import Worker


class Collector(io.StringIO):
    def events(self):
        return [json.loads(line) for line in self.getvalue().splitlines()]


def slow_job(params, ctx):
    for step in range(int(params.get("steps", 50))):
        ctx.progress("fit", frame=step, total=int(params.get("steps", 50)), step=step, loss=1.0 / (step + 1))
        time.sleep(0.02)
    return {"path": params.get("output", "out.npz")}


def failing_job(params, ctx):
    raise NoFaceError("no face found", file=params.get("image"))


def crashing_job(params, ctx):
    raise ZeroDivisionError("boom")


def make_worker():
    out = Collector()
    w = Worker({"track": slow_job, "noface": failing_job, "crash": crashing_job}, out=out, log=io.StringIO(),
               hello_info=lambda: {"device": "cpu"})
    return w, out


def run_lines(lines, wait_between=0.0):
    w, out = make_worker()
    feed = io.StringIO("".join(line + "\n" for line in lines))
    w.serve(feed)
    return out.events()


def test_hello_job_progress_result():
    events = run_lines(['{"id": "h", "cmd": "hello"}', '{"id": "1", "cmd": "track", "steps": 5, "output": "x.npz"}'])
    hello = events[0]
    assert hello["event"] == "hello" and hello["device"] == "cpu" and "track" in hello["capabilities"]
    kinds = [e["event"] for e in events]
    # shutdown at end of input cancels the still-running job, so drive it to completion explicitly
    assert kinds[1] == "accepted"


def test_job_runs_to_completion_and_queue_is_fifo():
    w, out = make_worker()
    w._thread.start()
    for line in ('{"id": "a", "cmd": "track", "steps": 3}', '{"id": "b", "cmd": "track", "steps": 2, "output": "b.npz"}'):
        w.handle_line(line)
    deadline = time.time() + 30
    while time.time() < deadline and sum(e["event"] == "result" for e in out.events()) < 2:
        time.sleep(0.02)
    w.shutdown()
    events = out.events()
    results = [e for e in events if e["event"] == "result"]
    assert [r["id"] for r in results] == ["a", "b"] and results[1]["path"] == "b.npz"
    accepted = [e for e in events if e["event"] == "accepted"]
    assert [a["queued"] for a in accepted] == [0, 1]
    progress = [e for e in events if e["event"] == "progress" and e["id"] == "a"]
    assert progress and {"stage", "frame", "total", "step", "loss", "elapsed", "eta"} <= set(progress[0])


def test_cancel_running_job_is_prompt_and_worker_stays_usable():
    w, out = make_worker()
    w._thread.start()
    w.handle_line('{"id": "long", "cmd": "track", "steps": 1000}')
    time.sleep(0.2)
    t0 = time.monotonic()
    w.handle_line('{"id": "c", "cmd": "cancel", "job": "long"}')
    while not any(e["event"] == "cancelled" for e in out.events()):
        time.sleep(0.01)
        assert time.monotonic() - t0 < 1.0, "cancel must take effect within a second"
    w.handle_line('{"id": "next", "cmd": "track", "steps": 2}')
    deadline = time.time() + 30
    while time.time() < deadline and not any(e["event"] == "result" and e["id"] == "next" for e in out.events()):
        time.sleep(0.02)
    w.shutdown()
    assert any(e["event"] == "result" and e["id"] == "next" for e in out.events())


def test_cancel_queued_job():
    w, out = make_worker()
    w._thread.start()
    w.handle_line('{"id": "first", "cmd": "track", "steps": 10}')
    w.handle_line('{"id": "second", "cmd": "track", "steps": 10}')
    w.handle_line('{"id": "c", "cmd": "cancel", "job": "second"}')
    # the waiting job is dropped at once, before the running one finishes
    cancelled = [e for e in out.events() if e.get("id") == "second" and e["event"] == "cancelled"]
    assert cancelled and not any(e["event"] == "result" for e in out.events())
    deadline = time.time() + 30
    while time.time() < deadline and not any(e.get("id") == "first" and e["event"] == "result" for e in out.events()):
        time.sleep(0.02)
    w.shutdown()
    events = out.events()
    assert any(e["event"] == "result" and e["id"] == "first" for e in events)
    assert not any(e["event"] == "progress" and e["id"] == "second" for e in events)


def test_errors_are_events_and_worker_survives():
    w, out = make_worker()
    w._thread.start()
    for line in ("this is not json", '["a list"]', '{"id": "u", "cmd": "dance"}', '{"id": "k", "cmd": "cancel", "job": "nope"}',
                 '{"id": "f", "cmd": "noface", "image": "/data/empty.jpg"}', '{"id": "x", "cmd": "crash"}',
                 '{"id": "ok", "cmd": "track", "steps": 1}'):
        w.handle_line(line)
    deadline = time.time() + 30
    while time.time() < deadline and not any(e["event"] == "result" for e in out.events()):
        time.sleep(0.02)
    w.shutdown()
    errors = {e["id"]: e for e in out.events() if e["event"] == "error"}
    codes = [e["code"] for e in out.events() if e["event"] == "error"]
    assert codes.count("bad_json") == 1 and "bad_request" in codes
    assert errors["u"]["code"] == "unknown_command" and "dance" in errors["u"]["message"]
    assert errors["k"]["code"] == "unknown_job"
    assert errors["f"] == {"event": "error", "id": "f", "code": "no_face", "message": "no face found", "file": "/data/empty.jpg"}
    assert errors["x"]["code"] == "internal" and "ZeroDivisionError" in errors["x"]["message"]
    assert any(e["event"] == "result" and e["id"] == "ok" for e in out.events())


def test_shutdown_cancels_running_job_quickly():
    w, out = make_worker()
    w._thread.start()
    w.handle_line('{"id": "long", "cmd": "track", "steps": 1000}')
    time.sleep(0.1)
    t0 = time.monotonic()
    assert w.handle_line('{"cmd": "shutdown"}') is False
    w.shutdown()
    assert time.monotonic() - t0 < 1.0
    events = out.events()
    assert events[-1] == {"event": "bye"} and any(e["event"] == "cancelled" for e in events)
