"""Length-bucketed batching: examples of similar length share a batch sized by a token budget.

Short sentences travel in large batches and long documents in small ones, so almost nothing is padding
(bench/README.md measures what that buys against random and ``group_by_length`` batches)::

    sampler = LengthBucketedBatchSampler(lengths, max_tokens=8192, max_batch_size=32, seed=42)
    sampler.set_epoch(1); batches = list(sampler)   # lists of example indices
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from workbench.errors import DataError


class LengthBucketedBatchSampler(torch.utils.data.Sampler):
    """Batches of equal-length examples whose size is set by a token budget.

    Examples are sorted by token length (ties broken at random each epoch) and packed greedily so that
    ``batch examples x longest length <= max_tokens`` and ``batch examples <= max_batch_size``. The batch
    boundaries depend only on the multiset of lengths, so the number of batches is the same every
    epoch (the trainer's schedule relies on that), while the order of batches and their members change
    with the epoch's seed. Padding is nearly zero.

    Args:
        lengths: token length of each example, shape ``(N,)``.
        max_tokens: padded-token budget of one batch.
        max_batch_size: most examples in one batch.
        shuffle: shuffle members (within equal lengths) and batch order each epoch.
        seed: base seed; epoch ``e`` uses ``seed + e`` so a resumed run sees the same batches.
        epoch_lengths: for data whose lengths change each epoch (augmented variants), a function giving
            epoch ``e``'s lengths. Batch sizes stay those planned from ``lengths`` (so every epoch has the
            same number of batches, which the trainer's schedule relies on); the members of each epoch are
            sorted by that epoch's own lengths, so padding stays near zero.
        shards: processes the batches are dealt to (``torchrun`` / ``accelerate launch``: the world size). The
            plan then holds a multiple of ``shards`` batches (the largest batches are halved until it does), so
            when accelerate deals batch ``i`` to process ``i % shards`` every process gets different batches, the
            same number of steps, and each example is used once an epoch, without accelerate repeating batches.
            (Evaluation is not sharded: see ``trainer._HFTrainer.evaluation_loop``.)
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        max_batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        epoch_lengths: Callable[[int], Sequence[int]] | None = None,
        shards: int = 1,
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.epoch_lengths = epoch_lengths
        self.max_tokens, self.max_batch_size = max_tokens, max_batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        if len(self.lengths) and self.lengths.max() > max_tokens:
            raise DataError(
                f"An example of {self.lengths.max()} tokens exceeds data.max_tokens={max_tokens}; "
                "raise data.max_tokens or lower data.max_length."
            )
        self.sizes = self._shardable(self._plan(np.sort(self.lengths)), shards)

    @staticmethod
    def _shardable(sizes: list[int], shards: int) -> list[int]:
        """Halve the largest batches until their count divides by ``shards`` (a no-op for one process)."""
        sizes = list(sizes)
        while shards > 1 and len(sizes) % shards and max(sizes, default=0) > 1:
            i = int(np.argmax(sizes))  # batches stay in ascending-length order: the halves replace it in place
            sizes[i : i + 1] = [sizes[i] - sizes[i] // 2, sizes[i] // 2]
        return sizes

    def _plan(self, sorted_lengths: np.ndarray) -> list[int]:
        sizes, count = [], 0
        for length in sorted_lengths:  # ascending, so the newest example is the longest
            if count and ((count + 1) * length > self.max_tokens or count + 1 > self.max_batch_size):
                sizes.append(count)
                count = 0
            count += 1
        if count:
            sizes.append(count)
        return sizes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> LengthBucketedBatchSampler:
        """Itself. With several processes accelerate wraps this in a ``BatchSamplerShard`` and passes each epoch on
        to ``batch_sampler.sampler.set_epoch`` only; without this the shuffle would repeat epoch 0 every epoch."""
        return self

    def __len__(self) -> int:
        return len(self.sizes)

    def _lengths_now(self) -> np.ndarray:
        if self.epoch_lengths is None:
            return self.lengths
        return np.asarray(self.epoch_lengths(self.epoch), dtype=np.int64)

    def batches(self) -> list[list[int]]:
        return list(self)

    def __iter__(self):
        # one batch at a time: the epoch's plan is two arrays, not a list of every index (large corpora)
        rng = np.random.default_rng(self.seed + self.epoch)
        tiebreak = rng.random(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        order = np.lexsort((tiebreak, self._lengths_now()))
        del tiebreak
        bounds = np.cumsum([0, *self.sizes])
        sequence = rng.permutation(len(self.sizes)) if self.shuffle else range(len(self.sizes))
        for i in sequence:
            yield order[bounds[i] : bounds[i + 1]].tolist()

    def padding_ratio(self) -> float:
        """Padded tokens over real tokens in this epoch (1.0 means no padding at all)."""
        sorted_lengths = np.sort(self._lengths_now())
        bounds = np.cumsum([0, *self.sizes])
        padded = sum(sorted_lengths[b - 1] * (b - a) for a, b in itertools.pairwise(bounds))
        return float(padded / max(1, sorted_lengths.sum()))
