"""Cosine and local-similarity heads: the engine's head interface and checkpoint restore."""

from __future__ import annotations

import math

import pytest
import torch

from cil_core.engine.heads import CosineHead, LocalSimilarityHead, merge_proxies


def test_grow_moves_current_rows_to_old_and_counts_classes():
    head = CosineHead(4)
    head.grow(3)
    assert head.num_classes == 3 and head.num_old_classes == 0
    first = head.weight_new.detach().clone()
    head.grow(2)
    assert head.num_classes == 5 and head.num_old_classes == 3
    assert torch.equal(head.weight_old.detach(), first)
    assert head.weight_new.shape == (2, 4)


def test_frozen_old_rows_stay_frozen_across_grow():
    head = CosineHead(4)
    head.grow(2)
    head.grow(2)
    head.weight_old.requires_grad_(False)
    head.grow(1)
    assert head.weight_old.requires_grad is False and head.weight_new.requires_grad is True


def test_state_dict_restores_into_a_fresh_head_after_resize_to():
    src = LocalSimilarityHead(3, proxies=2)
    src.grow(2)
    src.grow(3)
    with torch.no_grad():
        src.sigma.fill_(4.0)
    dst = LocalSimilarityHead(3, proxies=2)
    dst.resize_to(src.num_classes)  # what the engine does before load_state_dict
    dst.load_state_dict(src.state_dict())
    assert dst.num_classes == 5 and dst.num_old_classes == 2
    x = torch.randn(6, 3)
    assert torch.equal(dst(x), src(x))


def test_cosine_logits_by_hand_and_scale_invariance():
    head = CosineHead(2)
    head.grow(2)
    with torch.no_grad():
        head.weight_new.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        head.sigma.fill_(2.0)
    f = torch.tensor([[3.0, 4.0]])
    with torch.no_grad():
        assert head(f)[0].tolist() == pytest.approx([1.2, 1.6])  # 2 * (0.6, 0.8)
        assert torch.allclose(head(10 * f), head(f))
        assert head.similarity(f)[0].tolist() == pytest.approx([0.6, 0.8])


def test_proxy_merging_by_hand():
    raw = torch.tensor([[0.0, 1.0, 0.5, 0.5]])  # class 0: proxies 0, 1; class 1: 0.5, 0.5
    merged = merge_proxies(raw, 2)
    e = math.exp(1.0)
    assert float(merged[0, 0]) == pytest.approx(e / (1 + e), rel=1e-6)  # softmax-weighted
    assert float(merged[0, 1]) == pytest.approx(0.5, rel=1e-6)
    head = LocalSimilarityHead(2, proxies=2)
    head.grow(1)
    with torch.no_grad():
        head.weight_new.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    f = torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        assert float(head(f)[0, 0]) == pytest.approx(e / (1 + e), rel=1e-6)
