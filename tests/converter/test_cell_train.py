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


@pytest.fixture(scope="module")
def sample_cells():
    """The cells of the shipped sample fields, cut as the device cuts them (labels from the
    file names)."""
    from conftest import sample_paths
    from converter.cell_data import extract
    from edge.analysis.cells import CellParams
    from edge.analysis.segmentation import SegmentationParams
    from edge.evaluation.dataset import Sample

    samples = [Sample(p, p.name.split("__")[0]) for p in sample_paths()]
    return extract(samples, SegmentationParams(), CellParams(), log=lambda _: None)


def test_field_bags_draw_every_class_alike_and_keep_a_fields_cells_together(sample_cells):
    """Classes are drawn alike even when one has fewer fields (here benign keeps one of its
    two sample fields), and a bag's cells are its own field's."""
    from dataclasses import replace

    import numpy as np

    from converter.cell_train import FieldBags
    from edge.analysis.labels import LABELS

    dropped = int(np.flatnonzero(sample_cells.field_labels == 0)[0])
    keep = sample_cells.field != dropped
    cells = replace(sample_cells, rgb=sample_cells.rgb[keep], own=sample_cells.own[keep],
                    near=sample_cells.near[keep], field=sample_cells.field[keep])
    cfg = CellTrainConfig(fields_per_batch=400, cells_per_field=2)
    bags = FieldBags(cells, cfg, seed=3)
    for k, fields in enumerate(bags.by_class):
        assert len(fields) and (cells.field_labels[fields] == k).all() and dropped not in fields
    for f, members in enumerate(bags.members):
        assert (cells.field[members] == f).all()
    assert sum(len(m) for m in bags.members) == len(cells.field)
    x1, x2, y = bags.batch()
    assert x1.shape == x2.shape == (400 * 2, 96, 96, 3) and y.shape == (400, len(LABELS))
    # one benign field of seven: drawn by field it would be 1/7 of the bags, by class 1/4
    assert 80 <= y.sum(0)[0] <= 120, y.sum(0)


def test_the_bag_loss_pools_the_cells_as_the_device_does(sample_cells):
    """With all the weight on the field, the loss a step reports is the cross-entropy of the
    device's pooled call (``edge.analysis.cells.pool``) against the field's label, computed
    from the model's outputs before the step."""
    import numpy as np
    from keras import layers

    from converter.cell_train import FieldBags, _bag_step
    from edge.analysis.cells import pool

    inputs = [keras.Input((96, 96, 3)), keras.Input((96, 96, 3))]
    pooled = layers.Concatenate()([layers.GlobalAveragePooling2D()(layers.Rescaling(1 / 255)(x)) for x in inputs])
    model = keras.Model(inputs, layers.Dense(4, activation="softmax")(pooled))
    cfg = CellTrainConfig(fields_per_batch=4, cells_per_field=6, field_loss_weight=1.0, label_smoothing=0.0)
    x1, x2, y = FieldBags(sample_cells, cfg, seed=5).batch()
    p = model.predict((x1, x2), verbose=0)
    expected = np.mean([-np.log(pool(p[i * 6:(i + 1) * 6])[int(np.argmax(y[i]))]) for i in range(4)])
    before = model.get_weights()
    loss, _ = _bag_step(model, cfg, 1e-2)(x1, x2, y)
    assert float(loss) == pytest.approx(expected, rel=1e-3)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # it learned
