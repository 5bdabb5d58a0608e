import torch

from avmatch import losses


def test_info_nce_prefers_aligned_pairs_and_is_symmetric():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    aligned = 10 * emb @ emb.T
    shuffled = aligned[:, torch.randperm(8)]
    l_aligned = sum(losses.info_nce(aligned).values())
    l_shuffled = sum(losses.info_nce(shuffled).values())
    assert l_aligned < l_shuffled
    terms = losses.info_nce(aligned)
    sym = losses.info_nce(aligned.T)
    assert torch.allclose(terms["infonce_v2a"], sym["infonce_a2v"])


def test_pair_bce_and_margin_reward_the_right_sign():
    good = sum(losses.pair_bce(torch.full((4,), 5.0), torch.full((4,), -5.0)).values())
    bad = sum(losses.pair_bce(torch.full((4,), -5.0), torch.full((4,), 5.0)).values())
    assert good < 0.05 < bad
    # contrastive scores are negative distances: matched close (0), mismatched beyond the margin
    good = sum(losses.contrastive_margin(torch.zeros(4), torch.full((4,), -2.0)).values())
    bad = sum(losses.contrastive_margin(torch.full((4,), -2.0), torch.zeros(4)).values())
    assert good == 0 and bad > 1
