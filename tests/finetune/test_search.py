"""The search space's schedule: steps that scale with the labelled images, no duplicate trials."""
from __future__ import annotations

from facesift.finetune.config import SearchSpace
from facesift.finetune.search import candidates, default_hparams, scaled_steps


def test_steps_scale_with_the_square_root_of_the_labelled_images():
    space = SearchSpace(lr=[1e-3], steps=[1000, 500], backbone_lr=[1.0], steps_images=4000, min_steps=40)
    assert scaled_steps(1000, 4000, space) == 1000
    assert scaled_steps(1000, 1000, space) == 500          # a quarter of the images, half the steps
    assert scaled_steps(1000, 40, space) == 100             # 1 %: a tenth of the steps, 10x the epochs
    assert scaled_steps(500, 4, space) == 40                # floored at min_steps
    assert default_hparams(space, 1000).steps == 500
    assert [c.steps for c in candidates(space, n=1000)] == [500, 250]


def test_fixed_steps_when_not_scaled_and_no_duplicate_trials():
    space = SearchSpace(lr=[1e-3, 3e-4], steps=[600, 300], backbone_lr=[1.0])
    assert default_hparams(space, 10).steps == 600 and scaled_steps(300, 10, space) == 300
    assert len(candidates(space, n=10)) == 4
    # both schedules hit the floor for a tiny fraction: the trials are distinct settings, not repeats
    floored = SearchSpace(lr=[1e-3, 3e-4], steps=[600, 300], backbone_lr=[1.0], steps_images=100000, min_steps=50)
    trials = candidates(floored, seed=3, n=20)
    assert len(trials) == len(set(trials)) == 2 and {t.steps for t in trials} == {50}


def test_the_fewshot_recipe_resolves_with_search_and_scaled_steps():
    from pathlib import Path

    from facesift.common.config import resolve
    from facesift.finetune.config import FinetuneConfig
    cfg = resolve(FinetuneConfig, Path(__file__).parents[2] / "configs" / "finetune-fewshot.yaml",
                  section="finetune", data="x.txt")
    cfg.check()
    assert cfg.trials >= 3 and cfg.search.steps_images > 0 and len(cfg.search.lr) * len(cfg.search.steps) * len(
        cfg.search.backbone_lr) >= cfg.trials
    assert cfg.augment.translate >= 0.15 and cfg.augment.scale[1] / cfg.augment.scale[0] >= 2 and cfg.augment.flip > 0
    assert scaled_steps(cfg.search.steps[0], 100, cfg.search) < scaled_steps(cfg.search.steps[0], 5000, cfg.search)
