"""Which examples form each step: Poisson sampling for DP, shuffling otherwise.

DP-SGD's accounting assumes Poisson sampling: each example joins each step
independently with probability q, so a logical batch has a random size. To
keep shapes fixed (XLA and TPUs compile once), a logical batch is cut into
physical chunks of a fixed size, the last one padded and masked. Nothing is
ever dropped: a logical batch larger than one chunk simply takes more chunks,
all accumulated before the one noise draw of that step.

Example:

  >>> sampler = PoissonSampler(num_examples=1000, sampling_rate=0.1, key=0)
  >>> chunks = to_chunks(sampler.step_indices(0), chunk_size=128)
  >>> chunks[0].indices.shape, int(chunks[0].mask.sum()) == len(sampler.step_indices(0))
  ((128,), True)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class Chunk:
  """A fixed-size physical batch.

  Attributes:
    indices: int64 [size] example indices (padding repeats index 0).
    mask: float32 [size], 1 for real examples and 0 for padding.
  """
  indices: np.ndarray
  mask: np.ndarray


def to_chunks(indices: np.ndarray, chunk_size: int) -> list[Chunk]:
  """Cuts a logical batch into padded chunks of `chunk_size`.

  An empty logical batch gives one all-padding chunk, so that the step still
  runs (and still adds its noise, as the accounting assumes).
  """
  if chunk_size < 1:
    raise ValueError(f'chunk_size must be positive, got {chunk_size}.')
  count = max(1, math.ceil(len(indices) / chunk_size))
  chunks = []
  for c in range(count):
    part = np.asarray(indices[c * chunk_size:(c + 1) * chunk_size], np.int64)
    pad = chunk_size - len(part)
    chunks.append(Chunk(
        np.concatenate([part, np.zeros(pad, np.int64)]),
        np.concatenate([np.ones(len(part), np.float32),
                        np.zeros(pad, np.float32)])))
  return chunks


def poisson_bound(num_examples: int, sampling_rate: float, steps: int,
                  failure_prob: float = 1e-3) -> int:
  """A chunk size that holds a whole Poisson batch in all but rare steps.

  The size is the binomial quantile that every one of `steps` batches stays
  below with probability at least 1 - failure_prob. A larger batch still
  trains correctly, over two chunks.
  """
  per_step = failure_prob / max(steps, 1)
  return max(1, int(stats.binom.isf(per_step, num_examples, sampling_rate)))


class PoissonSampler:
  """Poisson sampling, deterministic per (key, step).

  Each step's batch depends only on the key and the step number, so a
  resumed run (which restores the key from its checkpoint) draws exactly the
  batches an uninterrupted run would. For DP training the key must be secret
  (dp_medtf.privacy.randomness): whoever knows it knows every batch.

  Args:
    num_examples: N.
    sampling_rate: q.
    key: an int, or a sequence of non-negative ints (e.g. 256 bits of OS
      entropy as four 64-bit words).
  """

  def __init__(self, num_examples: int, sampling_rate: float,
               key: int | Sequence[int]):
    if num_examples < 1:
      raise ValueError(f'num_examples must be positive, got {num_examples}.')
    if not 0.0 < sampling_rate <= 1.0:
      raise ValueError(f'sampling_rate must lie in (0, 1], got {sampling_rate}.')
    self.num_examples = num_examples
    self.sampling_rate = sampling_rate
    self.key = ([int(key)] if np.isscalar(key) else
                [int(k) for k in key])

  def step_indices(self, step: int) -> np.ndarray:
    """The indices of the examples that join step `step`."""
    rng = np.random.default_rng([*self.key, step, 0x9D15])
    return np.flatnonzero(rng.random(self.num_examples) < self.sampling_rate)


def shuffled_batches(num_examples: int, batch_size: int, seed: int,
                     epoch: int) -> list[Chunk]:
  """One epoch of shuffled fixed-size batches (non-private training)."""
  rng = np.random.default_rng([seed, epoch, 0x5F1E])
  return to_chunks(rng.permutation(num_examples), batch_size)


def epoch_plan(num_examples: int, batch_size: int, steps_per_epoch: int,
               epoch: int, chunk_size: int, *, private: bool,
               sampling_key=None, seed: int = 0,
               first_step: int = 0, last_step: int | None = None
               ) -> list[tuple[int, Chunk]]:
  """The (step, chunk) pairs of one epoch, in order.

  Private runs draw Poisson batches of rate batch_size / num_examples from
  the secret `sampling_key`, cut into chunks of `chunk_size`; non-private
  runs shuffle with `seed` into batches of `batch_size`. Steps are numbered
  from the first step of the run; those before `first_step` (already
  trained) and from `last_step` on are left out.

  Example:

    >>> plan = epoch_plan(100, 10, 10, epoch=1, chunk_size=16, private=True,
    ...                   sampling_key=7)
    >>> plan[0][0], plan[-1][0], len(plan[0][1].indices)
    (10, 19, 16)
  """
  first = epoch * steps_per_epoch
  if private:
    sampler = PoissonSampler(num_examples, batch_size / num_examples,
                             sampling_key)
    plan = [(s, c) for s in range(first, first + steps_per_epoch)
            for c in to_chunks(sampler.step_indices(s), chunk_size)]
  else:
    batches = shuffled_batches(num_examples, batch_size, seed, epoch)
    plan = [(first + i, c) for i, c in enumerate(batches)]
  end = math.inf if last_step is None else last_step
  return [(s, c) for s, c in plan if first_step <= s < end]
