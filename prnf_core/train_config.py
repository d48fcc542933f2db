"""Training settings: :class:`TrainConfig` and its presets (what :func:`prnf_core.train.fit`
takes, and what the CLI, YAML and the Prefect form fill).

>>> from prnf_core.train_config import TrainConfig
>>> TrainConfig(preset="paper", epochs=5).iterations is None   # explicit epochs win
True
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prnf_core.models.base import fill_from_preset

#: Values each preset gives to the fields the user did not set. Explicit values always win:
#: ``TrainConfig(preset="paper", epochs=5)`` trains 5 epochs, not the preset's iterations.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"iterations": 30_000, "batch_size": 5000, "lr": 1e-3, "lam": 100.0,
              "lr_schedule": "step", "lr_milestones": [3000], "lr_decay": 0.5},
}


class TrainConfig(BaseModel):
    """Optimization settings. ``preset="paper"`` = the paper's 3-D example (a GPU-sized run)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(
        30, ge=1, description="Passes over the training split. Given explicitly with a preset "
                              "that sets iterations, epochs win and the preset's iterations "
                              "are not applied.",
    )
    iterations: int | None = Field(
        None, ge=1, description="Gradient steps instead of epochs (overrides epochs)."
    )
    batch_size: int = Field(512, ge=1, description="Pairs per gradient step.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    lr_schedule: Literal["constant", "step", "cosine"] = Field(
        "cosine", description="constant; step (x lr_decay at lr_milestones); cosine annealing."
    )
    lr_milestones: list[int] = Field(
        default_factory=list, description="Steps at which 'step' multiplies the lr by lr_decay."
    )
    lr_decay: float = Field(0.5, gt=0, le=1, description="Factor of the 'step' schedule.")
    warmup_steps: int = Field(
        0, ge=0, description="Linear learning-rate warm-up over the first steps (0: none), "
                             "multiplying the schedule."
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1,
        description="Exponential moving average of the weights, updated every step with this "
                    "decay (e.g. 0.999) and used for validation, early stopping and the saved "
                    "model; None: the raw weights.",
    )
    lam: float = Field(100.0, ge=0, description="Reversibility weight λ (prnf).")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="Share of pairs held out.")
    split_seed: int = Field(0, ge=0, description="Seed of the train/validation split.")
    seed: int = Field(0, ge=0, description="Seed of initialization and shuffling.")
    patience: int | None = Field(
        None, ge=1, description="Early stopping: epochs without validation improvement."
    )
    grad_clip: float | None = Field(10.0, gt=0, description="Max gradient norm (None: off).")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")
    log_every: int = Field(50, ge=1, description="Steps between 'step' callbacks.")
    progress: bool = Field(True, description="Show a progress bar.")
    threads: int | None = Field(
        1, ge=1,
        description="Torch CPU threads while training (None: torch's default). One thread is "
                    "fastest for CPU-sized models (benchmarks/README.md, bench_model.py).",
    )
    memory_cap_mb: float | None = Field(
        None, gt=0,
        description="Training from a dataset store: the memory (MB, 10^6 bytes) its rows may "
                    "take. None: they are loaded whole. When the rows (training and validation, "
                    "in the model's dtype) exceed the cap, training streams them chunk by chunk "
                    "through a shuffle buffer that stays under it (prnf_core/streaming.py): "
                    "the normalization is then fitted on a bounded sample of the training rows "
                    "and validation uses a bounded share of the validation rows. A cap the "
                    "rows fit in trains exactly as without one. Refused, naming the minimum, "
                    "when it cannot hold one chunk plus a batch.",
    )
    torch_compile: bool = Field(
        False,
        description="Compile the training loss with torch.compile (any batch size, one "
                    "compile): somewhat faster steps after a one-off compile of tens of CPU "
                    "seconds (less when the on-disk cache of an earlier run with the same "
                    "shapes applies), so worth it for long or repeated runs "
                    "(benchmarks/README.md). Needs a C++ compiler on CPU.",
    )
    preset: Literal["paper"] | None = Field(
        None, description="'paper': 30,000 iterations, batch 5000, lr 1e-3 -> 5e-4 at 3000, "
                          "λ=100. Fills only the fields not given explicitly: an explicit "
                          "field (or explicit epochs, instead of the preset's iterations) wins, "
                          "in the CLI, YAML and the Prefect form alike.",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        return fill_from_preset(data, _preset_values)

    @model_validator(mode="after")
    def _has_length(self) -> TrainConfig:
        if self.epochs is None and self.iterations is None:
            raise ValueError("epochs: give epochs or iterations (both are None)")
        return self

    @classmethod
    def preset_fields(cls, preset: str | None) -> set[str]:
        """The fields a preset decides when they are not given: with ``iterations`` comes
        ``epochs`` (a default epochs count set alongside would cancel the preset's length)."""
        fields = set(TRAIN_PRESETS.get(preset or "", {}))
        return fields | {"epochs"} if "iterations" in fields else fields


def _preset_values(preset: str, given: dict[str, Any]) -> dict[str, Any]:
    """What ``preset`` contributes to an input that sets the keys in ``given``: only absent
    keys, and no ``iterations`` when ``epochs`` is given (explicit epochs win)."""
    values = dict(TRAIN_PRESETS.get(preset, {}))
    if given.get("epochs") is not None:
        values.pop("iterations", None)
    return {k: v for k, v in values.items() if k not in given}
