"""The environments and benchmarks reach the trainer and the selector only through their public members and hooks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OWNERS = {"trl_lead/trainer.py": "LEADSFTTrainer", "trl_lead/selection.py": "RoundSelector LEADState"}
OUTSIDE = sorted([*ROOT.glob("envs/*.py"), *ROOT.glob("benchmarks/*.py")])


def private_members() -> set[str]:
    """Every `_name` (not dunder) that the trainer, the selector or the state defines or assigns on `self`."""
    names = set()
    for path, classes in OWNERS.items():
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.ClassDef) and node.name in classes.split():
                for inner in ast.walk(node):
                    if isinstance(inner, ast.FunctionDef):
                        names.add(inner.name)
                    elif isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name):
                        if inner.value.id == "self":
                            names.add(inner.attr)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


PRIVATE = private_members()


def violations(source: str) -> list[str]:
    """Private members of the trainer/selector/state read, assigned, overridden or named in `getattr` in `source`."""
    found = []
    tree = ast.parse(source)
    subclasses = {  # classes built on the trainer, the selector or the state: their own `self._x` are the owners'
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(
            getattr(base, "id", getattr(base, "attr", "")) in ("LEADSFTTrainer", "RoundSelector", "LEADState")
            for base in node.bases
        )  # fmt: skip
    }
    inside = {id(inner) for cls in subclasses for inner in ast.walk(cls)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not on_self or id(node) in inside:
                found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.FunctionDef) and node.name in PRIVATE and id(node) in inside:
            found.append(f"line {node.lineno}: overrides {node.name}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr"):
            name = node.args[1] if len(node.args) > 1 else None
            if isinstance(name, ast.Constant) and name.value in PRIVATE:
                found.append(f"line {node.lineno}: {node.func.id}(..., {name.value!r})")
    return found


def test_the_owners_have_private_members_to_guard():
    assert {"_begin_round", "_start_rounds", "_finish_round", "_lead_run", "_members", "_synced"} <= PRIVATE


@pytest.mark.parametrize("path", OUTSIDE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_member_of_the_trainer_or_selector_is_used_outside_trl_lead(path):
    assert violations(path.read_text()) == []


def test_the_check_finds_each_way_of_reaching_a_private_member():
    wrapped = "finish = trainer._finish_round\ntrainer._finish_round = lambda: finish()\n"
    overridden = "class T(LEADSFTTrainer):\n    def _begin_round(self, epoch):\n        return self._lead_run\n"
    probed = "members = getattr(selector, '_members', None)\n"
    assert len(violations(wrapped)) == 2
    assert len(violations(overridden)) == 2
    assert len(violations(probed)) == 1
    assert violations("class E:\n    def _begin_round(self):\n        self._lead_run = 1\n") == []  # its own


def test_the_trainer_hooks_give_scores_see_each_plan_and_each_round_record(tmp_path, pool, tokenizer, make_model):
    import numpy as np
    from transformers import TrainerCallback

    from trl_lead import LEADConfig, LEADSFTTrainer

    given = np.linspace(1.0, 2.0, len(pool))
    plans, records = [], []

    class Hooked(LEADSFTTrainer):
        def score_pool(self):
            return given.copy()  # initial scores from elsewhere: no scoring pass

        def plan_round(self):
            if self.lead_state.rounds:  # from the second round: every IDU replaced before the plan
                self.lead_state.set_idu(np.arange(len(self.lead_state), dtype=np.float64))
            planned = super().plan_round()
            plans.append(planned)
            return planned

    class RoundEnd(TrainerCallback):
        def on_round_end(self, args, state, control, record, trainer, **kwargs):
            records.append((record, state.global_step, trainer.lead_state.idu.copy()))

    args = LEADConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", save_strategy="no", max_length=64,
        assistant_only_loss=True, per_device_train_batch_size=4, max_steps=4, disable_tqdm=True,
        lead_cluster_column="family_id", lead_round_size=8, lead_budget=1.0, lead_sample_filter="none",
        lead_preset="paper", lead_gradient_correction=False, lead_smoothing=0.0,
    )  # fmt: skip
    trainer = Hooked(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    trainer.add_callback(RoundEnd())
    trainer.train()
    np.testing.assert_array_equal(trainer.lead_state.initial_iu, given.astype(np.float32))
    assert [record for record, _, _ in records] == trainer.lead_state.rounds and len(records) == 2
    assert [step for _, step, _ in records] == [2, 4]  # each at its round's last optimizer step
    assert [record["sample_ids"] for record, _, _ in records] == [plan.sample_ids.tolist() for plan in plans]
    # top-IDU over the replaced IDU (the last ids are the largest): the second round takes the highest ids it may
    second = np.asarray(records[1][0]["sample_ids"])
    cluster = trainer.lead_state.cluster
    chosen = cluster[second[0]]
    eligible = np.flatnonzero((cluster == chosen) & (trainer.lead_state.use_count >= 0))
    assert sorted(second.tolist()) == sorted(eligible[-8:].tolist())
