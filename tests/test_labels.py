"""The label map and the stratified split."""

from workbench.labels import LabelMap, stratified_split


def test_label_map_orders_numbers_numerically_and_round_trips():
    lm = LabelMap.from_labels(["10", "2", "1"])
    assert lm.names == ["1", "2", "10"]
    assert LabelMap.from_dict(lm.to_dict()).names == lm.names


class _Labels(list):
    """The least a selection offers stratified_split: a length, strata and take."""

    @property
    def strata(self) -> list:
        return list(self)

    def take(self, positions) -> "_Labels":
        return _Labels(self[i] for i in positions)


def test_stratified_split_keeps_each_class_share_and_falls_back_when_it_cannot():
    rows = _Labels(["pos"] * 80 + ["neg"] * 20)
    held, rest = stratified_split(rows, 20, seed=0)
    assert (held.count("neg"), held.count("pos"), rest.count("neg")) == (4, 16, 16)  # 20% of each class
    assert stratified_split(rows, 20, seed=0) == (held, rest)  # the seed decides
    lonely = _Labels(["a"] * 9 + ["b"])  # a class of one row cannot be stratified: a plain random split
    held, rest = stratified_split(lonely, 3, seed=0)
    assert len(held) == 3 and sorted(held + rest) == sorted(lonely)
