import math

import pytest
import torch

from matebit.losses import StyleQueue, in_batch_negatives, info_nce


def test_info_nce_hand_computed_raw_dot_products():
    z = torch.tensor([[1.0, 0.0]])
    z_pos = torch.tensor([[2.0, 0.0]])  # z.z+ = 2
    z_neg = torch.tensor([[0.5, 1.0]])  # z.z- = 0.5
    tau = 0.5
    want = -math.log(math.exp(2 / tau) / (math.exp(2 / tau) + math.exp(0.5 / tau)))
    assert info_nce(z, z_pos, z_neg, tau=tau, normalize=False).item() == pytest.approx(want, rel=1e-6)


def test_info_nce_normalised_uses_cosines():
    z = torch.tensor([[3.0, 0.0]])
    z_pos = torch.tensor([[5.0, 5.0]])  # cos = 1/sqrt2
    z_neg = torch.tensor([[0.0, -7.0]])  # cos = 0
    c = 1 / math.sqrt(2)
    want = -math.log(math.exp(c / 0.5) / (math.exp(c / 0.5) + 1.0))
    assert info_nce(z, z_pos, z_neg, tau=0.5).item() == pytest.approx(want, rel=1e-5)


def test_info_nce_drops_when_positive_moves_closer():
    z = torch.randn(4, 64)
    neg = torch.randn(16, 64)
    far = info_nce(z, torch.randn(4, 64), neg)
    near = info_nce(z, z + 0.1 * torch.randn(4, 64), neg)
    assert near < far


def test_info_nce_no_negatives_is_zero_not_nan():
    z = torch.randn(3, 8, requires_grad=True)
    for neg in (None, torch.zeros(0, 8)):
        loss = info_nce(z, torch.randn(3, 8), neg)
        assert torch.isfinite(loss) and loss.item() == 0.0


def test_info_nce_per_sample_negatives_match_shared():
    z, zp, zn = torch.randn(2, 4), torch.randn(2, 4), torch.randn(3, 4)
    shared = info_nce(z, zp, zn)
    per_sample = info_nce(z, zp, zn.unsqueeze(0).expand(2, -1, -1))
    assert torch.allclose(shared, per_sample, atol=1e-6)


def test_in_batch_negatives():
    z = torch.arange(6.0).reshape(3, 2)
    neg = in_batch_negatives(z)
    assert neg.shape == (3, 2, 2)
    assert neg[1].tolist() == [[0.0, 1.0], [4.0, 5.0]]


def test_queue_fifo_wraps_and_state_dict_round_trip():
    q = StyleQueue(dim=2, size=3)
    assert len(q) == 0 and q.negatives().shape == (0, 2)
    q.enqueue(torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    assert q.negatives()[:, 0].tolist() == [1.0, 2.0]
    q.enqueue(torch.tensor([[3.0, 3.0], [4.0, 4.0]]))  # 1 is the oldest: overwritten by 4
    assert len(q) == 3 and sorted(q.negatives()[:, 0].tolist()) == [2.0, 3.0, 4.0]
    assert int(q.ptr) == 1
    q2 = StyleQueue(dim=2, size=3)
    q2.load_state_dict(q.state_dict())
    assert set(q.state_dict()) == {"codes", "filled", "ptr"}
    q.enqueue(torch.tensor([[5.0, 5.0]]))
    q2.enqueue(torch.tensor([[5.0, 5.0]]))  # same next state after the round trip
    assert torch.equal(q.codes, q2.codes) and sorted(q2.negatives()[:, 0].tolist()) == [3.0, 4.0, 5.0]
    q.enqueue(torch.arange(10.0).reshape(5, 2))  # more than the size: keep the newest 3
    assert sorted(q.negatives()[:, 0].tolist()) == [4.0, 6.0, 8.0]


def test_queue_detaches_and_checks_shape():
    q = StyleQueue(dim=2, size=4)
    q.enqueue(torch.ones(1, 2, requires_grad=True))
    assert not q.codes.requires_grad
    with pytest.raises(ValueError, match="expected"):
        q.enqueue(torch.ones(1, 3))


def test_policy_enqueue():
    gen, ex = torch.full((2, 2), 1.0), torch.full((2, 2), 2.0)
    q = StyleQueue(dim=2, size=8)
    assert q.policy_enqueue("paper", step=0, early_steps=2, z_generated=gen, z_exemplar=ex)
    assert not q.policy_enqueue("paper", step=2, early_steps=2, z_generated=gen, z_exemplar=ex)  # frozen
    assert q.negatives()[:, 0].tolist() == [1.0, 1.0]
    for policy in ("exemplars", "cast"):
        q = StyleQueue(dim=2, size=8)
        assert q.policy_enqueue(policy, step=10**6, early_steps=2, z_generated=gen, z_exemplar=ex)
        assert q.negatives()[:, 0].tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="unknown policy"):
        q.policy_enqueue("moco", 0, 1, gen, ex)


def test_queue_enqueue_under_torch_distributed_single_rank(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        q = StyleQueue(dim=2, size=4)
        q.enqueue(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # goes through the all_gather path
        assert q.negatives().tolist() == [[1.0, 2.0], [3.0, 4.0]]
    finally:
        dist.destroy_process_group()
