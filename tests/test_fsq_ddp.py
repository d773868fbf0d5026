"""FSQ's entropy loss under DDP is VidTok's: the batch term is the entropy of the mean code
assignment over every rank's tokens (VidTok's ``maybe_distributed_mean``), so two gloo processes on
two halves of a batch give the loss, and after DDP's averaging the gradient, of one process on the
whole batch."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vidtwin.models.regularizers import FSQRegularizer

LEVELS = (8, 5, 5, 5)
WORLD_SIZE = 2
# float32 sums of 1,000 probabilities per code, in another order on each side, and one all_reduce
TOLERANCE = 1e-5


def whole_batch(seed: int = 0) -> torch.Tensor:
    """(B, C, T, W): FSQ inputs whose two halves use the codebook differently, so that the entropy of
    each half's mean assignment differs from that of the whole batch's."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.randn(2, len(LEVELS), 6, 8, generator=generator) * 0.3 + 0.8
    second = torch.randn(2, len(LEVELS), 6, 8, generator=generator) * 0.3 - 0.8
    return torch.cat([first, second])  # rank r holds rows 2r, 2r + 1


def entropy_loss_and_gradient(latent: torch.Tensor):
    quantizer = FSQRegularizer(LEVELS, entropy_loss=True).train()
    latent = latent.clone().requires_grad_()
    loss = quantizer(latent)[1]["entropy_loss"]
    loss.backward()
    return loss.detach(), latent.grad


def rank_main(rank: int, rendezvous: str, results: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE)
    try:
        local = whole_batch().chunk(WORLD_SIZE)[rank]
        loss, gradient = entropy_loss_and_gradient(local)
        torch.save({"loss": loss, "gradient": gradient}, f"{results}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_give_the_entropy_loss_of_the_concatenated_batch(tmp_path):
    # fork: the ranks start in a moment, without importing torch again (spawn took 20 s of a 2-core machine)
    mp.start_processes(rank_main, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD_SIZE,
                       start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    batch = whole_batch()
    loss, gradient = entropy_loss_and_gradient(batch)

    # Without the all-reduce each rank's batch term would be its own half's entropy: check the halves
    # really differ, so that the comparison below can tell the two apart.
    halves = [entropy_loss_and_gradient(half)[0] for half in batch.chunk(WORLD_SIZE)]
    assert abs(float(sum(halves) / WORLD_SIZE - loss)) > 100 * TOLERANCE

    # Loss: the per-token term is each rank's mean over its tokens (equal halves), the batch term is shared.
    assert abs(float(sum(r["loss"] for r in ranks) / WORLD_SIZE - loss)) < TOLERANCE
    # Gradient: each rank's reaches its own inputs; averaged by DDP over the ranks it is the whole batch's.
    for rank, (result, expected) in enumerate(zip(ranks, gradient.chunk(WORLD_SIZE))):
        assert result["gradient"].abs().sum() > 0, rank
        assert torch.allclose(result["gradient"] / WORLD_SIZE, expected, rtol=1e-4, atol=TOLERANCE), rank
