import json

import pytest
from pydantic import ValidationError

from model_training.synth.config import CURRICULUM, SynthConfig


def test_defaults_follow_the_paper_curriculum():
    cfg = SynthConfig()
    assert cfg.stage == 3 and cfg.allowed_blur_types() == CURRICULUM[3] and cfg.mixed_instances
    assert not SynthConfig(stage=2).mixed_instances


def test_a_recipe_round_trips_through_json(tmp_path):
    cfg = SynthConfig(stage=1, blur_types=("straight",))
    f = tmp_path / "recipe.json"
    f.write_text(json.dumps(cfg.model_dump(mode="json")))
    assert SynthConfig.load(f) == cfg


def test_bad_recipes_are_refused_clearly(tmp_path):
    with pytest.raises(ValidationError, match="stage"):
        SynthConfig(stage=4)
    with pytest.raises(ValidationError, match="coverage"):
        SynthConfig.model_validate({"coverage": {"sharp": 0, "full": 0, "partial": 0}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        SynthConfig.model_validate({"stgae": 2})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read synthesis config"):
        SynthConfig.load(bad)
