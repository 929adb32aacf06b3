"""The scene's look before any blur: haze, exposure and a colour cast.

Real blurred frames are rarely crisp studio pictures: a walking camera shoots into
glare, a high-speed camera is dim and tinted, a compact's frame is washed out. If only
hard negatives looked like that (soft light is a negative's degradation), the detector
would learn that a washed-out or tinted picture is sharp. A look applied to the sharp
working image, before the blur and before observability is read, lets blurred and sharp
samples share it, and the label stays honest: detail the haze flattens below the
observability rule's gradient is no longer labelled at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from model_training.synth.composite import linear_to_u8, u8_to_linear
from model_training.synth.config import LookConfig
from model_training.synth.generate import loguniform
from model_training.synth.record import Recorded


@dataclass(frozen=True)
class SceneLook(Recorded):
    """``haze`` of the scene's contrast replaced by ``airlight`` (a fraction of white),
    then ``exposure`` (a gain) and per-channel ``cast`` gains, all in linear light as a
    sensor would see them."""

    name: ClassVar[str] = "scene_look"
    haze: float
    airlight: float
    exposure: float
    cast: tuple[float, float, float]

    @classmethod
    def sample(cls, rng: np.random.Generator, cfg: LookConfig) -> SceneLook:
        cast = rng.uniform(1.0 - cfg.cast, 1.0 + cfg.cast, size=3)
        return cls(
            haze=float(rng.uniform(*cfg.haze)),
            airlight=float(rng.uniform(*cfg.airlight)),
            exposure=loguniform(rng, *cfg.exposure),
            cast=(float(cast[0]), float(cast[1]), float(cast[2])),
        )

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The uint8 RGB ``image`` with this look."""
        lin = (1.0 - self.haze) * u8_to_linear(image) + self.haze * self.airlight
        return linear_to_u8(lin * self.exposure * np.asarray(self.cast, np.float32))


def maybe_look(image: np.ndarray, rng: np.random.Generator, cfg: LookConfig) -> tuple[np.ndarray, dict | None]:
    """With probability ``cfg.prob``, the image under a sampled look and its record.

    A zero probability draws nothing from ``rng``, so a recipe without looks makes the
    same samples it made before looks existed (the model card's fixed test sets)."""
    if cfg.prob <= 0 or rng.random() >= cfg.prob:
        return image, None
    look = SceneLook.sample(rng, cfg)
    return look.apply(image), look.to_dict()
