import json
import shutil

import numpy as np
import pytest
import torch

import foundry3d
from foundry3d.config import apply_overrides
from foundry3d.models.checkpoint import save_release
from foundry3d.study import StudyError, study

DISTILL = [
    "data.datasets=[synthetic:train@10]",
    "data.num_points=256",
    "data.cache_views=1",
    "probe.enabled=false",
    "engine.steps=12",
    "engine.batch_size=8",
    "engine.warmup_steps=2",
    "engine.tensorboard=false",
    "engine.progress=false",
    "engine.log_every=4",
]
EVAL = ["progress=false", "svm.grid=[0.1]", "svm.published=false", "svm.num_points=256", "fidelity.num_points=256"]
EXPERT = [
    "num_points=256",
    "finetune.engine.steps=6",
    "finetune.frozen_steps=2",
    "finetune.engine.batch_size=8",
    "kd.engine.steps=6",
    "kd.engine.batch_size=8",
    "finetune.engine.progress=false",
    "kd.engine.progress=false",
    "finetune.engine.log_every=2",  # logged steps: the cost is read from the runs' logs
    "kd.engine.log_every=2",
]


# a study of the ablation alone: no s sweep, gate, merging or experts, 4 distillation steps
ABLATION_ONLY = {
    "sweep": [],
    "gate_r": [],
    "gate_keep": [],
    "merging": [],
    "experts": [],
    "distill": apply_overrides({}, [o for o in DISTILL if not o.startswith("engine.steps")] + ["engine.steps=4"]),
    "eval": apply_overrides({}, EVAL),
    "flops_points": 256,
}


def _tiny_study(tmp_path, **fields):
    """A study config on a random test teacher and generated shapes (seconds per student)."""
    torch.manual_seed(0)
    teacher = str(save_release(foundry3d.create_model("test"), tmp_path / "teacher"))
    fields.setdefault("token_sweep", {"enabled": False})
    return {"teacher": teacher, "tasks": ["svm:synthetic@8", "fidelity:synthetic@4"], "supertokens": 4, **fields}


@pytest.mark.slow
def test_study_end_to_end_on_a_tiny_teacher(monkeypatch, tmp_path):
    cfg = _tiny_study(
        tmp_path,
        kinds=["foundry", "kmeans", "fps", "mlp", "mimic", "patchmerger", "tome", "tome_dso"],
        seeds=[1],  # the default is 3 seeds; one keeps this test short
        sweep=[1, 2, 4],
        gate_r=[0.0, 1.0],
        gate_keep=[4],
        merging=["tome", "pitome"],
        experts=["cls:synthetic@6"],
        distill=apply_overrides({}, DISTILL),
        expert_overrides=EXPERT,
        eval=apply_overrides({}, EVAL),
        flops_points=256,
        ledger=str(tmp_path / "ledger"),
    )
    res = study("paper", config=cfg, out=tmp_path / "paper")
    record = json.loads((tmp_path / "paper" / "study.json").read_text())
    models = record["models"]
    assert {"teacher", "floor", "foundry s=4", "kmeans s=4", "mimic s=4", "expert cls:synthetic@6"} <= set(models)
    assert any(k.startswith("tome (training-free)") for k in models) and all("flops" in m for m in models.values())
    comp = record["comparison"]["fidelity:synthetic@4"]
    assert comp["students"]["foundry s=4"]["gain"]["student"] <= 1.0
    md = (tmp_path / "paper" / "study.md").read_text()
    for title in (
        "1. Universal",
        "2. SuperToken ablation",
        "3. Number of SuperTokens",
        "4. The gate",
        "5. Token merging",
    ):
        assert title in md
    assert (tmp_path / "paper" / "study.html").read_text().count("<table>") >= 5
    assert res["study"].endswith("study.json")
    cost = record["cost"]
    assert cost["students"]["foundry s=4"] > 0 and cost["experts"]["cls:synthetic@6"] > 0
    assert cost["total"] == pytest.approx(sum(cost["parts"].values()), abs=0.2) and "Cost:" in md
    study("paper", config=cfg, out=tmp_path / "paper")  # a resume: every run and score is there already
    again = json.loads((tmp_path / "paper" / "study.json").read_text())
    assert again["cost"] == cost  # what the runs cost, not what the resuming call took
    assert again["seconds"]["total"] < record["seconds"]["total"]
    cfg2 = {**cfg, "sweep": [1]}
    with pytest.raises(StudyError, match="other settings"):
        study("paper", config=cfg2, out=tmp_path / "paper")
    # the ledger's folder is where results are kept, not what they are: moving it is not another study
    moved_ledger = tmp_path / "ledger-moved"
    shutil.copytree(tmp_path / "ledger", moved_ledger)
    study("paper", config={**cfg, "ledger": str(moved_ledger)}, out=tmp_path / "paper")
    # a folder whose fingerprint was written with the ledger's path in it (before it was left out) resumes too
    stored = tmp_path / "paper" / "study_config.json"
    legacy = json.loads(stored.read_text())
    legacy["config"]["ledger"] = str(tmp_path / "ledger")
    legacy["config"]["token_sweep"]["ledger"] = None
    stored.write_text(json.dumps(legacy))
    study("paper", config=cfg, out=tmp_path / "paper")

    # on another machine (the study folder gone, the committed ledger there) nothing is trained again: every
    # student, the gated one at each deployment and the expert are read with their scores, FLOPs and costs
    from foundry3d import study as study_module

    def refuse(*a, **k):
        raise AssertionError("trained again although the ledger holds it")

    monkeypatch.setattr(study_module, "distill", refuse)
    monkeypatch.setattr(study_module, "expert", refuse)
    study("paper", config=cfg, out=tmp_path / "elsewhere")
    moved = json.loads((tmp_path / "elsewhere" / "study.json").read_text())
    assert moved["models"].keys() == models.keys()
    assert moved["cost"]["students"] == cost["students"] and moved["cost"]["experts"] == cost["experts"]
    recomputed = ("teacher", "floor", "tome (training-free)", "pitome (training-free)")  # from the teacher, anywhere
    trained = {k: v for k, v in cost["evaluations"].items() if not k.startswith(recomputed)}
    assert trained and all(moved["cost"]["evaluations"][k] == v for k, v in trained.items())
    assert all(moved["models"][k]["flops"] == m["flops"] for k, m in models.items())
    assert _timeless(moved["comparison"]) == _timeless(record["comparison"]) and moved["seeds"] == record["seeds"]


def _timeless(x):
    """A record without its wall times (models evaluated again take other seconds, nothing else)."""
    if isinstance(x, dict):
        return {k: _timeless(v) for k, v in x.items() if k != "seconds"}
    return x


def test_the_ablation_over_seeds_reports_spread_paired_differences_and_context_r2(tmp_path):
    cfg = _tiny_study(
        tmp_path,
        kinds=["foundry", "kmeans", "mlp"],
        seeds=[1, 2],
        **ABLATION_ONLY,
    )
    study("paper", config=cfg, out=tmp_path / "paper")
    record = json.loads((tmp_path / "paper" / "study.json").read_text())
    assert {"foundry s=4", "foundry s=4 seed=2", "kmeans s=4 seed=2", "mlp s=4 seed=2"} <= set(record["models"])
    runs = tmp_path / "paper" / "students"
    seeds = [(runs / n / "config.yaml").read_text() for n in ("foundry_s_4", "foundry_s_4_seed_2")]
    assert "seed: 1" in seeds[0] and "seed: 2" in seeds[1]
    fid = record["seeds"]["tasks"]["fidelity:synthetic@4"]
    assert len(fid["foundry"]["seeds"]) == 2 and fid["foundry"]["sd"] >= 0
    assert "minus_foundry" not in fid["foundry"] and len(fid["kmeans"]["minus_foundry"]) == 3
    d, lo, hi = fid["kmeans"]["minus_foundry"]
    assert lo <= d <= hi
    assert fid["mlp"]["context_r2"]["mean"] == 0.0
    assert "2b. SuperToken ablation at s = 4 over seeds" in (tmp_path / "paper" / "study.md").read_text()


def test_the_token_sweep_pairs_each_kind_with_dso_at_every_size_and_reports_it(tmp_path):
    cfg = _tiny_study(
        tmp_path,
        kinds=["foundry"],
        seeds=[1],
        **ABLATION_ONLY,
        token_sweep={
            "sizes": [256, 512],
            "seeds": [1, 2],
            "kinds": ["foundry", "kmeans", "mlp"],
            "before": True,
            "supertokens": 4,
            "steps": 3,
            "tasks": ["svm:synthetic@4", "fidelity:synthetic@4"],
            "large_tasks": ["knn:synthetic@4"],  # measured only at the larger size, as partseg is
            "large_from": 512,
        },
    )
    study("paper", config=cfg, out=tmp_path / "paper")
    sweep = json.loads((tmp_path / "paper" / "study.json").read_text())["token_sweep"]
    assert [(r["points"], r["tokens"], r["tokens_per_supertoken"]) for r in sweep["sizes"].values()] == [
        (256, 16, 4.0),
        (512, 32, 8.0),
    ]
    assert list(sweep["sizes"]["256"]["tasks"]) == ["svm:synthetic@4", "fidelity:synthetic@4"]
    big = sweep["sizes"]["512"]  # knn is compared only where teacher - floor has headroom, else it says so
    compared, left_out = "knn:synthetic@4" in big["tasks"], big["no_headroom"].get("knn:synthetic@4")
    assert compared != bool(left_out) and "no_headroom" in sweep["sizes"]["256"]
    if left_out:
        lo, hi = left_out["gap_ci95"]
        assert not lo > 0 and lo <= left_out["gap"] <= hi
    fid = sweep["sizes"]["512"]["tasks"]["fidelity:synthetic@4"]
    assert set(fid["kinds"]) == {"foundry", "kmeans", "mlp", "foundry_before"}
    assert len(fid["kinds"]["kmeans"]["seeds"]) == 2 and "dso_minus" not in fid["kinds"]["foundry"]
    d, lo, hi = fid["kinds"]["kmeans"]["dso_minus"]
    assert lo <= d <= hi and fid["kinds"]["mlp"]["context_r2"]["mean"] == 0.0
    run = tmp_path / "paper" / "sweep" / "points512" / "students" / "foundry_before_seed2" / "config.yaml"
    text = run.read_text()
    assert "num_groups: 32" in text and "empty_bins: fallback" in text and "seed: 2" in text
    md = (tmp_path / "paper" / "study.md").read_text()
    assert "6. Token-count sweep" in md and "figures/token_sweep.png" in md
    rows = [line for line in md.splitlines() if line.startswith("| 256 points")]
    if compared:  # a task measured at one size only shows '-' at the other
        assert rows and all("| - |" in line.split("teacher", 1)[-1] for line in rows)
    else:
        assert "at 512 points: no headroom, so no kind was compared on it" in md
    assert (tmp_path / "paper" / "figures" / "token_sweep.png").stat().st_size > 0


def test_a_sweep_size_beyond_the_stored_points_is_refused_with_the_count(monkeypatch):
    from foundry3d import token_sweep
    from foundry3d.errors import ConfigError

    monkeypatch.setattr(token_sweep, "dataset_info", lambda name, root=None: {"points_per_shape": 4096})
    with pytest.raises(ConfigError, match=r"sweep size 16384: .*kicad33 stores 4096.*expected <= 4096"):
        token_sweep.check_sizes([1024, 16384], ["svm:kicad33"])
    token_sweep.check_sizes([1024, 4096], ["svm:kicad33"])  # within: no error


def test_a_students_training_cost_comes_from_its_log_without_the_time_it_was_stopped(tmp_path):
    from foundry3d.train.runlog import training_seconds

    log = tmp_path / "metrics.jsonl"
    rows = [(10, 100.0), (20, 110.0), (30, 120.0), (40, 5000.0), (50, 5010.0)]  # killed after 30, resumed later
    log.write_text("\n".join(json.dumps({"step": s, "split": "train", "time": t}) for s, t in rows))
    assert training_seconds(tmp_path) == 50.0  # 10 steps before the first log + 40 steps at 1 s per step
    assert training_seconds(tmp_path / "never-ran") == 0.0


def test_a_large_size_task_is_compared_only_where_the_teacher_has_headroom_and_the_table_says_why_not():
    from foundry3d.report.tables import no_headroom_lines
    from foundry3d.token_sweep import headroom

    def res(score):
        return {"per_item": {"score": score}, "acc": float(np.mean(score))}

    ones, half = [1] * 200, [1, 0] * 100
    room = headroom("svm:kicad33", {"teacher": {"tasks": {"svm:kicad33": res(ones)}},
                                    "floor": {"tasks": {"svm:kicad33": res(half)}}})  # fmt: skip
    assert room["headroom"] and room["gap"] == 0.5 and room["gap_ci95"][0] > 0
    flat = headroom("svm:kicad33", {"teacher": {"tasks": {"svm:kicad33": res(half)}},
                                    "floor": {"tasks": {"svm:kicad33": res(ones)}}})  # fmt: skip
    assert not flat["headroom"] and flat["gap_ci95"][1] < 0
    sweep = {"sizes": {"4096": {"points": 4096, "no_headroom": {"svm:kicad33": flat}}}}
    (line,) = no_headroom_lines(sweep)
    assert "at 4,096 points: no headroom" in line and "teacher 50.0, floor 100.0, teacher − floor -50.0" in line


def test_a_bad_sweep_task_is_refused_before_any_work(tmp_path):
    from foundry3d.errors import ConfigError
    from foundry3d.token_sweep import SweepConfig

    for field_name in ("tasks", "large_tasks"):
        with pytest.raises(ConfigError, match=rf"{field_name}: unknown task 'svm'"):
            SweepConfig(**{field_name: ["svm"]}).validate()


def test_a_size_with_its_own_dataset_folder_reads_and_is_checked_against_that_folder(monkeypatch, tmp_path):
    from foundry3d import token_sweep
    from foundry3d.errors import ConfigError
    from foundry3d.token_sweep import SweepConfig

    stored = {"/big": 16384}
    monkeypatch.setattr(
        token_sweep, "dataset_info", lambda name, root=None: {"points_per_shape": stored.get(root, 4096)}
    )
    cfg = SweepConfig(sizes=[1024, 16384], roots={16384: "/big"}, tasks=["svm:kicad33"], large_tasks=[])
    cfg.validate()
    assert cfg.root_at(1024, "/std") == "/std" and cfg.root_at(16384, "/std") == "/big"
    with pytest.raises(ConfigError, match="sweep size 16384"):  # the standard folder stores 4096
        token_sweep.check_sizes([16384], cfg.tasks, None)
    with pytest.raises(ConfigError, match=r"token_sweep\.roots maps a sweep size"):
        SweepConfig(sizes=[1024], roots={2048: "/big"}).validate()

    seen = []

    def first_eval(spec, tasks, root=None, **kw):
        seen.append(root)
        raise KeyboardInterrupt  # stop after the first evaluation: only where it reads matters here

    monkeypatch.setattr(token_sweep, "evaluate", first_eval)
    with pytest.raises(KeyboardInterrupt):
        token_sweep.token_sweep(SweepConfig(sizes=[16384], roots={16384: "/big"}, tasks=["svm:kicad33"],
                                            large_tasks=[]), tmp_path, "embedded", root="/std")  # fmt: skip
    assert seen == ["/big"]


def test_a_student_another_process_holds_is_left_to_it_and_read_when_it_lets_go(monkeypatch, tmp_path):
    """Two sweeps into one folder share the work: a student whose folder is locked by another process is done
    last, once the lock is gone, instead of stopping the sweep with the lock's error."""
    import fcntl
    import os
    import threading

    from foundry3d import token_sweep
    from foundry3d.token_sweep import SweepConfig

    monkeypatch.setattr(token_sweep, "BUSY_POLL_S", 0.05)
    teacher = _tiny_study(tmp_path)["teacher"]
    cfg = SweepConfig(sizes=[256], seeds=[1], kinds=["foundry", "kmeans", "mlp"], before=False, supertokens=4,
                      steps=3, tasks=["svm:synthetic@4"], large_tasks=[])  # fmt: skip
    held = tmp_path / "sweep" / "points256" / "students" / "kmeans_seed1"
    held.mkdir(parents=True)
    fd = os.open(held / ".foundry3d-lock", os.O_RDWR | os.O_CREAT)  # another open file: as another process's
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    last = tmp_path / "sweep" / "points256" / "eval" / "mlp_seed1" / "results.json"

    def other_process() -> None:  # works on kmeans until this sweep has done everything else
        while not last.exists():
            threading.Event().wait(0.05)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    threading.Thread(target=other_process, daemon=True).start()
    rec = token_sweep.token_sweep(cfg, tmp_path / "sweep", teacher, recipe=apply_overrides({}, DISTILL),
                                  eval_config=apply_overrides({}, EVAL))  # fmt: skip
    kinds = rec["sizes"]["256"]["tasks"]["svm:synthetic@4"]["kinds"]
    assert set(kinds) == {"foundry", "kmeans", "mlp"} and len(kinds["kmeans"]["seeds"]) == 1
    release = held / "release" / "model.safetensors"
    assert release.stat().st_mtime > last.stat().st_mtime  # kmeans came last, after the lock was let go


def test_two_sweeps_in_their_own_folders_sharing_a_ledger_train_each_student_once(monkeypatch, tmp_path):
    """A sweep script and a study's sweep (each with its own run folders) that share a ledger split the work:
    a student another process has claimed is left to it and read from the ledger once it is recorded."""
    import threading

    from foundry3d import token_sweep
    from foundry3d.ledger import Ledger
    from foundry3d.token_sweep import SweepConfig

    monkeypatch.setattr(token_sweep, "BUSY_POLL_S", 0.05)
    teacher = _tiny_study(tmp_path)["teacher"]
    cfg = SweepConfig(sizes=[256], seeds=[1], kinds=["foundry", "kmeans", "mlp"], before=False, supertokens=4,
                      steps=3, tasks=["svm:synthetic@4"], large_tasks=[], ledger=str(tmp_path / "ledger"))  # fmt: skip
    recipe, ev = apply_overrides({}, DISTILL), apply_overrides({}, EVAL)
    real_distill, trained = token_sweep.distill, []

    def counting(*a, **k):
        trained.append(k["out"].name)
        return real_distill(*a, **k)

    monkeypatch.setattr(token_sweep, "distill", counting)
    records: dict[str, dict] = {}

    def sweep(folder: str) -> None:
        records[folder] = token_sweep.token_sweep(cfg, tmp_path / folder, teacher, recipe=recipe, eval_config=ev)

    both = [threading.Thread(target=sweep, args=(f,)) for f in ("script", "study")]
    for t in both:
        t.start()
    for t in both:
        t.join()
    assert sorted(trained) == ["foundry_seed1", "kmeans_seed1", "mlp_seed1"]  # once each, by one or the other
    one, two = records["script"]["sizes"]["256"], records["study"]["sizes"]["256"]
    assert one["tasks"] == two["tasks"] and set(one["tasks"]["svm:synthetic@4"]["kinds"]) == set(cfg.kinds)

    # the claim itself: exclusive while held, free again once let go
    ledger, key = Ledger(tmp_path / "ledger"), {"hash": "0123"}
    with (
        ledger.claim("points256", "foundry_seed1", key) as mine,
        ledger.claim("points256", "foundry_seed1", key) as theirs,
    ):
        assert mine and not theirs
    with ledger.claim("points256", "foundry_seed1", key) as again:
        assert again


def test_a_sweep_on_a_new_machine_reads_its_students_from_the_ledger_and_retrains_when_anything_changed(
    monkeypatch, tmp_path
):
    """The ledger (a committed folder) keeps each student's results and costs keyed by what determines its
    weights: a sweep whose run folders are gone reads them instead of retraining; a changed recipe retrains;
    the key's premise (same key, same weights) holds."""
    from foundry3d import token_sweep
    from foundry3d.errors import ConfigError
    from foundry3d.token_sweep import SweepConfig

    teacher = _tiny_study(tmp_path)["teacher"]
    ledger = tmp_path / "ledger"
    tasks = ["svm:synthetic@4", "fidelity:synthetic@4"]
    cfg = SweepConfig(sizes=[256], seeds=[1], kinds=["foundry", "mlp"], before=False, supertokens=4, steps=3,
                      tasks=tasks, large_tasks=[], ledger=str(ledger))  # fmt: skip
    recipe, ev = apply_overrides({}, DISTILL), apply_overrides({}, EVAL)
    first = token_sweep.token_sweep(cfg, tmp_path / "one", teacher, recipe=recipe, eval_config=ev)
    entries = json.loads((ledger / "points256.json").read_text())["students"]
    assert set(entries) == {"floor", "foundry_seed1", "mlp_seed1", "teacher"}
    assert set(entries["mlp_seed1"]["seconds"]) == {"train", "eval"} and entries["mlp_seed1"]["weights_hash"]

    real_distill = token_sweep.distill
    trained = []

    def counting(*a, **k):
        trained.append(k["out"].name)
        return real_distill(*a, **k)

    real_evaluate, evaluated = token_sweep.evaluate, []

    def counting_eval(*a, **k):
        evaluated.append(k["name"])
        return real_evaluate(*a, **k)

    monkeypatch.setattr(token_sweep, "distill", counting)
    monkeypatch.setattr(token_sweep, "evaluate", counting_eval)
    stored = json.loads((ledger / "points256.json").read_text())
    for entry in stored["students"].values():
        entry["recorded"] = "2000-01-01T00:00:00"  # a time no write of this run can give
    (ledger / "points256.json").write_text(json.dumps(stored, separators=(",", ":")) + "\n")
    before = (ledger / "points256.json").read_text()
    token_sweep.token_sweep(cfg, tmp_path / "one", teacher, recipe=recipe, eval_config=ev)  # resumed where it ran
    trained.clear()
    evaluated.clear()
    again = token_sweep.token_sweep(cfg, tmp_path / "two", teacher, recipe=recipe, eval_config=ev)
    # what was read back is not written again: the committed file does not change when nothing did
    assert (ledger / "points256.json").read_text() == before
    # read from the ledger, nothing retrained or scored again (teacher and floor neither): the same table and
    # the students' costs
    assert trained == [] and evaluated == []
    one, two = first["sizes"]["256"], again["sizes"]["256"]
    assert one["tasks"] == two["tasks"]
    assert {k: v for k, v in one["seconds"].items() if "seed" in k} == {
        k: v for k, v in two["seconds"].items() if "seed" in k
    }

    # another recipe (one more step) is another student: retrained, and its entry replaced
    more = apply_overrides({}, [o for o in DISTILL if not o.startswith("engine.log_every")] + ["engine.log_every=2"])
    token_sweep.token_sweep(cfg, tmp_path / "three", teacher, recipe=more, eval_config=ev)
    assert sorted(trained) == ["foundry_seed1", "mlp_seed1"]
    # another evaluation setting: the stored results do not hold, so the student is trained again
    trained.clear()
    ev2 = apply_overrides({}, [*EVAL, "svm.grid=[0.3]"])
    token_sweep.token_sweep(cfg, tmp_path / "four", teacher, recipe=more, eval_config=ev2)
    assert sorted(trained) == ["foundry_seed1", "mlp_seed1"]

    # same key, same weights: the student retrained without the ledger has the hash the ledger recorded
    kept = json.loads((ledger / "points256.json").read_text())["students"]
    plain = SweepConfig(**{**cfg.__dict__, "ledger": None})
    rec = token_sweep.token_sweep(plain, tmp_path / "five", teacher, recipe=more, eval_config=ev2)
    res = json.loads((tmp_path / "five" / "points256" / "eval" / "mlp_seed1" / "results.json").read_text())
    assert res["model"]["hash"] == kept["mlp_seed1"]["weights_hash"] and "256" in rec["sizes"]

    (ledger / "points256.json").write_text('{"something": "else"}')
    with pytest.raises(ConfigError, match=r"sweep ledger .*points256\.json: expected a foundry3d-sweep-ledger"):
        token_sweep.token_sweep(cfg, tmp_path / "six", teacher, recipe=recipe, eval_config=ev)


def test_a_study_cut_short_keeps_every_student_it_finished_in_the_ledger(monkeypatch, tmp_path):
    """Each trained model is scored and recorded as soon as it is trained, so a study killed later (here: by
    its expert) leaves the students it finished in the ledger for the next machine."""
    from foundry3d import study as study_module

    fields = {**ABLATION_ONLY, "experts": ["cls:synthetic@6"], "expert_overrides": EXPERT}
    cfg = _tiny_study(tmp_path, kinds=["foundry", "mlp"], seeds=[1], ledger=str(tmp_path / "ledger"), **fields)

    def killed(*a, **k):
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(study_module, "expert", killed)
    with pytest.raises(RuntimeError, match="went away"):
        study("paper", config=cfg, out=tmp_path / "paper")
    entries = json.loads((tmp_path / "ledger" / "study.json").read_text())["students"]
    assert set(entries) == {"foundry s=4", "mlp s=4"}
    assert set(entries["mlp s=4"]["evals"]["mlp s=4"]) == {"results", "flops", "params"}
