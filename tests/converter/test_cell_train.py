"""The fine-tuning learning-rate schedule of the cell model (converter/cell_train.py)."""
import pytest

keras = pytest.importorskip("keras")

from converter.cell_train import CellTrainConfig, _rate  # noqa: E402


def test_cosine_schedule_falls_to_its_final_fraction_over_the_phase():
    cfg = CellTrainConfig(finetune_epochs=4, cells_per_epoch=320, batch_size=32)  # 10 steps per epoch
    rate = _rate(cfg, "finetune", 1e-4, cfg.finetune_epochs)
    first, middle, last = (float(rate(step)) for step in (0, 20, 40))
    assert first == pytest.approx(1e-4)
    assert middle == pytest.approx(1e-4 * (0.05 + 0.95 * 0.5), rel=1e-4)
    assert last == pytest.approx(1e-4 * 0.05, rel=1e-4)


def test_head_phase_and_constant_schedule_keep_the_rate():
    assert _rate(CellTrainConfig(), "head", 1e-3, 2) == 1e-3
    assert _rate(CellTrainConfig(finetune_schedule="constant"), "finetune", 1e-4, 6) == 1e-4


def test_unknown_schedule_is_refused_by_name():
    with pytest.raises(ValueError, match="'linear'"):
        _rate(CellTrainConfig(finetune_schedule="linear"), "finetune", 1e-4, 6)
