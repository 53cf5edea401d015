"""The clock state is read once per round boundary (edge.latency.clocks.ClockWatch), a change
during a round still voids exactly that round, and the states are stored compactly in
latency.npz while older files still load and compare.  The readers read recorded sysfs files
and recorded command outputs; the count of reads is the count of recorded nvidia-smi answers
given (each reading asks nvidia-smi once)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edge.latency.ab import compare, measure, run_ab
from edge.latency.clocks import (ROOT_ENV, ClockReader, ClockWatch, apply_changes,
                                 default_watch, recorded_runner, state_changes)
from edge.latency.gate import INCONCLUSIVE
from edge.latency.session import LatencySession, config_with_overrides
from edge.latency.store import BaselineStore, load_records, load_result, save_result
from edge.errors import DataFormatError

SMI = "1980 MHz, 2619 MHz, 0x0000000000000001, 41\n"
SMALL = dict(preset="snapshot25", rows=12, cols=16, fps=50.0, model="none")


def _folder(root, *, governor="performance", temp_mc=45000):
    """A recorded unit: two CPUs' cpufreq, one thermal zone, nvidia-smi's answer."""
    for cpu in ("cpu0", "cpu1"):
        d = root / "sys/devices/system/cpu" / cpu / "cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "scaling_governor").write_text(governor + "\n")
        (d / "scaling_min_freq").write_text("729600\n")
        (d / "scaling_max_freq").write_text("2201600\n")
    z = root / "sys/class/thermal/thermal_zone0"
    z.mkdir(parents=True, exist_ok=True)
    (z / "type").write_text("cpu-thermal\n")
    (z / "temp").write_text(f"{temp_mc}\n")
    (root / "commands").mkdir(exist_ok=True)
    (root / "commands/nvidia-smi.txt").write_text(SMI)
    return root


class Counted(ClockReader):
    """Reads recorded folders, the next one per reading (the last one from then on), and
    counts the readings by the nvidia-smi answers its runner gave."""

    def __init__(self, *folders):
        self.folders = list(folders)
        self.reads = 0
        super().__init__(folders[0])

    def read(self):
        self.root = self.folders.pop(0) if len(self.folders) > 1 else self.folders[0]
        inner = recorded_runner(self.root / "commands")

        def run(cmd):
            self.reads += cmd[0] == "nvidia-smi"
            return inner(cmd)
        self.run = run
        return super().read()


@pytest.fixture(scope="module")
def cfg():
    return config_with_overrides(None, **SMALL)


def test_measure_reads_once_per_boundary_and_a_round_starts_where_the_last_ended(tmp_path, cfg):
    reader = Counted(_folder(tmp_path / "a"))
    with LatencySession(cfg, clocks=reader) as s:
        doc, rec = measure(s, frames=3, warmup=1, rounds=3)
    assert reader.reads == 4                        # 3 rounds, 4 boundaries (was 6 readings)
    clocks = [r["clocks"] for r in rec.rounds]
    assert clocks[1]["before"] is clocks[0]["after"] and clocks[2]["before"] is clocks[1]["after"]
    assert doc["void"] == []


def test_ab_in_one_process_shares_the_boundary_reading_between_the_arms(tmp_path, cfg):
    shared = Counted(_folder(tmp_path / "a"))
    watch = ClockWatch(shared)
    with LatencySession(cfg, clocks=watch, label="A") as a, \
            LatencySession(cfg, clocks=watch, label="B") as b:
        doc, rec = run_ab(a, b, frames=3, warmup=1, rounds=4, max_rounds=4)
    assert [r["arm"] for r in rec.rounds] == ["A", "B", "B", "A"]
    assert shared.reads == 5                        # 4 rounds, 5 boundaries (was 8 readings)
    # one watch per arm: a round after the other arm's reads afresh (A's round 3 does not
    # start from the end of A's round 0), so only B B shares a reading
    ra, rb = Counted(_folder(tmp_path / "a")), Counted(_folder(tmp_path / "a"))
    with LatencySession(cfg, clocks=ra, label="A") as a, \
            LatencySession(cfg, clocks=rb, label="B") as b:
        run_ab(a, b, frames=3, warmup=1, rounds=4, max_rounds=4)
    assert (ra.reads, rb.reads) == (4, 3)


def test_sessions_without_a_reader_share_the_process_watch(tmp_path, cfg, monkeypatch):
    with LatencySession(cfg, label="A") as a, LatencySession(cfg, label="B") as b:
        assert a.clocks is b.clocks is default_watch()
    monkeypatch.setenv(ROOT_ENV, str(_folder(tmp_path / "other")))
    assert default_watch() is not a.clocks          # another recorded root, another watch
    assert default_watch().start(0)["thermal"] == {"cpu-thermal": 45.0}


def test_a_change_during_a_round_voids_exactly_that_round(tmp_path, cfg):
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b", governor="powersave")
    # readings: start of 0, end of 0 (= start of 1), end of 1: the governor changed during 1
    reader = Counted(a, a, b)
    with LatencySession(cfg, clocks=reader) as s:
        doc, rec = measure(s, frames=3, warmup=1, rounds=4)
    assert reader.reads == 5
    assert doc["void"] == [{"round": 1, "arm": "", "changes": [
        "cpu0 governor performance -> powersave", "cpu1 governor performance -> powersave"]}]
    # in an A/B run on one shared watch: the change during B's second round (round 2)
    watch = ClockWatch(Counted(a, a, a, b))
    with LatencySession(cfg, clocks=watch, label="A") as sa, \
            LatencySession(cfg, clocks=watch, label="B") as sb:
        doc, _ = run_ab(sa, sb, frames=3, warmup=1, rounds=4, max_rounds=12)
    assert doc["gate"]["verdict"] == INCONCLUSIVE and len(doc["rounds"]) == 4
    assert [(v["round"], v["arm"]) for v in doc["void"]] == [(2, "B")]


def test_a_round_after_a_failed_one_reads_afresh(tmp_path):
    reader = Counted(_folder(tmp_path / "a"))
    watch = ClockWatch(reader)
    watch.start(0)
    watch.end(0)
    watch.start(1)                                  # round 1 fails: no end
    watch.start(2)
    assert reader.reads == 3


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_stored_compactly_and_loaded_in_full(tmp_path, cfg):
    a, hot = _folder(tmp_path / "a"), _folder(tmp_path / "hot", temp_mc=47500)
    with LatencySession(cfg, clocks=Counted(a, a, a, hot)) as s:
        doc, rec = measure(s, frames=3, warmup=1, rounds=3)
    (tmp_path / "run").mkdir()
    save_result(tmp_path / "run", doc, rec)
    z = _npz(tmp_path / "run" / "latency.npz")
    assert json.loads(str(z["clocks_start"])) == rec.rounds[0]["clocks"]["before"]
    stored = json.loads(str(z["rounds"]))
    assert all("clocks" not in r for r in stored)
    # rounds 0 and 1 ran under the same state; round 2's zone warmed by 2.5 C
    assert [r["clock_changes"] for r in stored] == [
        {}, {}, {"after": [[["thermal", "cpu-thermal"], 47.5]]}]
    back = load_records(tmp_path / "run")
    assert back.rounds == rec.rounds
    assert back.rounds[2]["clocks"]["after"]["thermal"] == {"cpu-thermal": 47.5}


def test_state_changes_round_trip():
    s0 = {"cpufreq": {"cpu0": {"governor": "performance", "min_khz": 729600.0,
                               "max_khz": 2201600.0}},
          "gpus": [{"sm_mhz": 1980.0, "throttle_reasons": 1, "temp_c": 41.0}],
          "jetson_clocks_locked": True, "thermal": {"cpu-thermal": 45.0}}
    s1 = {"cpufreq": {"cpu0": {"governor": None, "min_khz": 729600.0, "max_khz": 2201600.0},
                      "cpu1": {"governor": "powersave", "min_khz": 1, "max_khz": None}},
          "gpus": [], "jetson_clocks_locked": 1, "jetson_power_mode": "15W"}
    for x, y in ((s0, s1), (s1, s0), ({}, s0), (s0, {}), (s0, s0)):
        changes = json.loads(json.dumps(state_changes(x, y)))
        back = apply_changes(x, changes)
        assert json.dumps(back, sort_keys=True) == json.dumps(y, sort_keys=True)
    assert state_changes(s0, s0) == [] and apply_changes(s0, []) is s0
    assert state_changes(s0, dict(s0, jetson_clocks_locked=1)) == [
        [["jetson_clocks_locked"], 1]]                          # 1 is not True


def _old_format(run_dir, rec):
    """Rewrite a result as an older build stored it: full clock states in every round of
    latency.npz, no clocks_start; latency.json without the top-level ``void``."""
    z = _npz(run_dir / "latency.npz")
    z.pop("clocks_start")
    z["rounds"] = np.array(json.dumps(rec.rounds))
    np.savez_compressed(run_dir / "latency.npz", **z)
    doc = json.loads((run_dir / "latency.json").read_text())
    doc.pop("void")
    (run_dir / "latency.json").write_text(json.dumps(doc))


def test_an_older_result_still_loads_compares_and_is_refused_when_void(tmp_path, cfg):
    a, hot = _folder(tmp_path / "a"), _folder(tmp_path / "hot", temp_mc=70000)
    runs = {}
    for name, reader in (("steady", Counted(a)), ("void", Counted(a, hot))):
        with LatencySession(cfg, clocks=reader) as s:
            doc, rec = measure(s, frames=3, warmup=1, rounds=2)
        (tmp_path / name).mkdir()
        save_result(tmp_path / name, doc, rec)
        _old_format(tmp_path / name, rec)
        runs[name] = rec
        back = load_records(tmp_path / name)
        assert back.rounds == rec.rounds and "clocks" in back.rounds[0]
    with np.load(tmp_path / "void" / "latency.npz") as z:
        assert "clocks_start" not in z                     # really the old shape
    old_steady, old_void = load_result(tmp_path / "steady"), load_result(tmp_path / "void")
    assert "void" not in old_void
    out = compare(old_steady, old_void)
    assert out["pairs"] == 2 and out["gate"]["verdict"] == INCONCLUSIVE
    assert out["void"] == [{"round": 0, "arm": "B", "changes": [
        "cpu-thermal temperature 45 -> 70 C (+25 C > 10 C)"]}]
    with pytest.raises(DataFormatError, match=r"void/latency.json: baseline add: the run is "
                                              r"void \(1 round\(s\) whose clocks changed, "
                                              r"first round 0: cpu-thermal temperature"):
        BaselineStore(tmp_path / "store").add(tmp_path / "void")
    assert BaselineStore(tmp_path / "store").add(tmp_path / "steady").is_dir()


def test_a_worker_reads_its_own_clocks_and_sends_them_back_in_full(tmp_path, cfg,
                                                                   monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(_folder(tmp_path / "unit")))   # the worker inherits it
    from edge.latency.worker import WorkerArm

    with LatencySession(cfg, label="A") as a, \
            WorkerArm(sys.executable, overrides=SMALL, label="B") as b:
        doc, rec = run_ab(a, b, frames=3, warmup=1, rounds=4, max_rounds=4)
    assert doc["void"] == []
    for r in rec.rounds:
        assert r["clocks"]["before"]["thermal"] == {"cpu-thermal": 45.0}
        assert r["clocks"]["after"]["cpufreq"]["cpu1"]["governor"] == "performance"
