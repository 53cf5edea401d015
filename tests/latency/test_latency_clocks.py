"""Clock state around every round (edge.latency.clocks) from recorded files and command
outputs, the void rule, and what it does to ab, run, compare and baselines.  Nothing here reads
this machine's clocks."""

from __future__ import annotations

import json
import shutil


from edge.cli import main
from edge.latency.ab import compare, measure, run_ab
from edge.latency.clocks import ClockReader, recorded_runner, void_reasons
from edge.latency.gate import INCONCLUSIVE, REGRESSION
from edge.latency.session import LatencySession, config_with_overrides
from edge.latency.store import load_result, save_result

SMI = "1980 MHz, 2619 MHz, 0x0000000000000001, 41\n"
NVPMODEL = "NV Power Mode: MAXN\n0\n"
JC_LOCKED = ("SOC family:tegra234  Machine:Jetson AGX Orin\nOnline CPUs: 0-11\n"
             "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 "
             "CurrentFreq=2201600 IdleStates: WFI=0 c7=0\n"
             "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\n")


def _unit(root, *, governor="performance", max_khz=2201600, temp_mc=45000, smi=SMI,
          power=NVPMODEL, jc=JC_LOCKED):
    for cpu in ("cpu0", "cpu1"):
        d = root / "sys/devices/system/cpu" / cpu / "cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "scaling_governor").write_text(governor + "\n")
        (d / "scaling_min_freq").write_text("729600\n")
        (d / "scaling_max_freq").write_text(f"{max_khz}\n")
    z = root / "sys/class/thermal/thermal_zone0"
    z.mkdir(parents=True, exist_ok=True)
    (z / "type").write_text("cpu-thermal\n")
    (z / "temp").write_text(f"{temp_mc}\n")
    c = root / "commands"
    c.mkdir(exist_ok=True)
    for name, text in (("nvidia-smi", smi), ("nvpmodel", power), ("jetson_clocks", jc)):
        (c / f"{name}.txt").write_text(text)
    return ClockReader(root, run=recorded_runner(c))


def test_reader_parses_recorded_outputs(tmp_path):
    state = _unit(tmp_path).read()
    assert state["cpufreq"]["cpu0"] == {"governor": "performance", "min_khz": 729600.0,
                                        "max_khz": 2201600.0}
    assert set(state["cpufreq"]) == {"cpu0", "cpu1"}
    assert state["gpus"] == [{"sm_mhz": 1980.0, "mem_mhz": 2619.0, "throttle_reasons": 1,
                              "temp_c": 41.0}]
    assert state["jetson_power_mode"] == "MAXN" and state["jetson_clocks_locked"] is True
    assert state["thermal"] == {"cpu-thermal": 45.0}


def test_a_machine_without_any_of_it_reads_empty(tmp_path):
    assert ClockReader(tmp_path, run=lambda cmd: None).read() == {}


def _state(tmp_path, name, **kw):
    return _unit(tmp_path / name, **kw).read()


def test_void_rule(tmp_path):
    base = _state(tmp_path, "a")
    assert void_reasons(base, _state(tmp_path, "same")) == []
    assert void_reasons(base, _state(tmp_path, "gov", governor="powersave")) == [
        "cpu0 governor performance -> powersave", "cpu1 governor performance -> powersave"]
    assert void_reasons(base, _state(tmp_path, "cap", max_khz=1497600)) == [
        "cpu0 cpufreq max kHz 2201600 -> 1497600", "cpu1 cpufreq max kHz 2201600 -> 1497600"]
    assert void_reasons(base, _state(tmp_path, "pm", power="NV Power Mode: 15W\n1\n")) == [
        "power mode (nvpmodel) MAXN -> 15W"]
    unlocked = JC_LOCKED.replace("MaxFreq=1300500000", "MaxFreq=1301000000")
    assert void_reasons(base, _state(tmp_path, "jc", jc=unlocked)) == [
        "clock lock (jetson_clocks) True -> False"]
    # 0x1 (GPU idle) is not a throttle; 0x20 (SW thermal slowdown) is
    assert void_reasons(base, _state(tmp_path, "busy", smi=SMI.replace("0x0000000000000001",
                                                                       "0x0"))) == []
    assert void_reasons(base, _state(tmp_path, "hot", smi=SMI.replace("0x0000000000000001",
                                                                      "0x20"))) == [
        "GPU 0 throttle reasons 0x0 -> 0x20"]
    # temperature: a rise of 10 C is allowed, 10.5 C is not
    assert void_reasons(base, _state(tmp_path, "t10", temp_mc=55000)) == []
    assert void_reasons(base, _state(tmp_path, "t11", temp_mc=55500)) == [
        "cpu-thermal temperature 45 -> 55.5 C (+10.5 C > 10 C)"]


class _Scripted(ClockReader):
    """Reads the folders in turn: one state per call (before, after, before, ...)."""

    def __init__(self, readers):
        self.readers = list(readers)

    def read(self):
        return self.readers.pop(0).read() if len(self.readers) > 1 else self.readers[0].read()


SMALL = dict(preset="snapshot25", rows=12, cols=16, fps=50.0, model="none")


def test_ab_with_a_void_round_is_inconclusive_naming_it(tmp_path):
    cfg = config_with_overrides(None, **SMALL)
    steady = _unit(tmp_path / "a")
    # arm B: its first round (round 1) sees the governor change; later rounds are steady
    b_clocks = _Scripted([_unit(tmp_path / "b0"), _unit(tmp_path / "b1", governor="powersave"),
                          _unit(tmp_path / "b2", governor="powersave")])
    with LatencySession(cfg, clocks=steady, label="A") as a, \
            LatencySession(cfg, clocks=b_clocks, label="B") as b:
        doc, _ = run_ab(a, b, frames=4, warmup=1, rounds=4, max_rounds=12)
    assert doc["gate"]["verdict"] == INCONCLUSIVE
    assert len(doc["rounds"]) == 4                 # void data: no more rounds asked for
    assert doc["void"] == [{"round": 1, "arm": "B", "changes": [
        "cpu0 governor performance -> powersave", "cpu1 governor performance -> powersave"]}]
    assert doc["gate"]["reason"].startswith(
        "clocks changed during the run, the data is void (never a pass or a regression): "
        "round 1 (B): cpu0 governor performance -> powersave")


def _rounds(n, p50, void_at=None):
    out = []
    for i in range(n):
        r = {"index": i, "arm": "", "metrics": {"end_to_end": {"p50": p50 * (1 + 0.01 * (i % 3)),
                                                               "p99": p50 * 1.5}},
             "misses": 0, "slots": 100, "frames": 100}
        if i == void_at:
            r["void"] = ["power mode (nvpmodel) MAXN -> 15W"]
        out.append(r)
    return out


def _doc(rounds):
    return {"fingerprint": {"hardware_key": "k"}, "rounds": rounds}


def test_compare_never_passes_or_flags_void_data():
    slow = compare(_doc(_rounds(16, 10.0)), _doc(_rounds(16, 20.0)))
    assert slow["gate"]["verdict"] == REGRESSION
    void = compare(_doc(_rounds(16, 10.0)), _doc(_rounds(16, 20.0, void_at=5)))
    assert void["gate"]["verdict"] == INCONCLUSIVE
    assert void["gate"]["reason"].endswith("round 5 (B): power mode (nvpmodel) MAXN -> 15W")


def test_run_stores_the_void_flag_and_compare_and_baselines_refuse_it(tmp_path, capsys):
    cfg = config_with_overrides(None, **SMALL)
    clocks = _Scripted([_unit(tmp_path / "a"), _unit(tmp_path / "b", temp_mc=70000)])
    with LatencySession(cfg, clocks=clocks) as s:
        doc, rec = measure(s, frames=4, warmup=1, rounds=2)
    (tmp_path / "run").mkdir()
    save_result(tmp_path / "run", doc, rec)
    stored = load_result(tmp_path / "run")
    assert stored["void"] == [{"round": 0, "arm": "", "changes": [
        "cpu-thermal temperature 45 -> 70 C (+25 C > 10 C)"]}]
    assert stored["rounds"][0]["void"] and "void" not in stored["rounds"][1]
    from edge.latency.report import write_report
    html = write_report(tmp_path / "void.html", stored, rec).read_text()
    assert "Void rounds" in html and "cpu-thermal temperature 45 -&gt; 70 C" in html
    shutil.copytree(tmp_path / "run", tmp_path / "other")
    assert main(["latency", "compare", str(tmp_path / "other"), str(tmp_path / "run")]) == 3
    assert "verdict: INCONCLUSIVE (clocks changed during the run" in capsys.readouterr().out
    assert main(["latency", "baseline", "add", str(tmp_path / "run"), "--store",
                 str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "baseline add: the run is void (1 round(s) whose clocks changed, " \
                             "first round 0: cpu-thermal temperature 45 -> 70 C" in err[0]


def test_baseline_add_refuses_an_ab_result_and_history_skips_a_damaged_entry(tmp_path, capsys):
    cfg = config_with_overrides(None, **SMALL)
    with LatencySession(cfg) as s:
        doc, rec = measure(s, frames=4, warmup=1, rounds=1)
    (tmp_path / "run").mkdir()
    save_result(tmp_path / "run", doc, rec)
    ab = json.loads((tmp_path / "run" / "latency.json").read_text())
    ab.update(kind="ab", summary={"A": ab["summary"], "B": ab["summary"]})
    shutil.copytree(tmp_path / "run", tmp_path / "ab")
    (tmp_path / "ab" / "latency.json").write_text(json.dumps(ab))
    store = tmp_path / "store"
    capsys.readouterr()
    assert main(["latency", "baseline", "add", str(tmp_path / "ab"), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        "ab/latency.json: baseline add: expected one unit's result from `hsi-edge latency "
        "run`, got an A/B result (hsi-edge latency ab)")
    assert main(["latency", "baseline", "add", str(tmp_path / "run"), "--store", str(store)]) == 0
    assert main(["latency", "baseline", "add", str(tmp_path / "run"), "--store", str(store)]) == 0
    key = doc["fingerprint"]["hardware_key"]
    damaged = sorted((store / key).iterdir())[0] / "latency.json"
    bad = json.loads(damaged.read_text())
    del bad["summary"]["end_to_end"]
    damaged.write_text(json.dumps(bad))
    capsys.readouterr()
    assert main(["latency", "baseline", "history", "--store", str(store)]) == 0
    cap = capsys.readouterr()
    assert cap.out.count("p50") == 1
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: skipped {damaged}: damaged latency "
                                               f"result: summary lacks end_to_end figures")


def test_reader_on_odd_sysfs_content(tmp_path):
    d = tmp_path / "sys/devices/system/cpu/cpu0/cpufreq"
    d.mkdir(parents=True)
    (d / "scaling_max_freq").write_bytes(b"\xff\xfe garbage\n")   # no governor, no min
    for name, temp in (("thermal_zone0", "N/A\n"), ("thermal_zone1", None),
                       ("thermal_zone2", "51000\n")):
        z = tmp_path / "sys/class/thermal" / name
        z.mkdir(parents=True)
        if temp is None:
            (z / "temp").mkdir()                                  # unreadable: EISDIR
        else:
            (z / "temp").write_text(temp)
    smi = "[N/A], [N/A], [N/A], [N/A]\n"
    state = ClockReader(tmp_path, run=lambda cmd: smi if cmd[0] == "nvidia-smi" else None).read()
    assert set(state) == {"cpufreq", "thermal", "gpus"}
    assert state["cpufreq"] == {"cpu0": {"governor": None, "min_khz": None, "max_khz": None}}
    assert state["thermal"] == {"thermal_zone2": 51.0}
    assert state["gpus"] == [{"sm_mhz": None, "mem_mhz": None, "throttle_reasons": None,
                              "temp_c": None}]
    assert void_reasons(state, state) == []
