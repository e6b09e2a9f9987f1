"""The training data order: ranks split each global batch, and a resumed stream continues the same sequence."""

import itertools

from matebit.data.sampler import StreamSampler


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_ranks_split_every_global_batch_and_resume_is_exact():
    n, batch, seed = 10, 2, 3
    whole = _take(StreamSampler(n, 2 * batch, seed), 4 * 2 * batch)  # one rank, global batches of 4
    ranks = [_take(StreamSampler(n, batch, seed, rank=r, world=2), 4 * batch) for r in (0, 1)]
    for step in range(4):
        merged = ranks[0][step * batch:(step + 1) * batch] + ranks[1][step * batch:(step + 1) * batch]
        assert merged == whole[step * 2 * batch:(step + 1) * 2 * batch]
    resumed = _take(StreamSampler(n, 2 * batch, seed, start_step=2), 2 * 2 * batch)
    assert resumed == whole[2 * 2 * batch:]
    assert sorted(i for i, _ in whole[:n]) == list(range(n))  # an epoch is a permutation of the data set
