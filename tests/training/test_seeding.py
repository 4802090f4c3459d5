import random

import numpy as np
import pytest
import torch

from nnunet_mt.training.seeding import (RandomStream, StreamedLoader, annotated_stream_seed, global_rng_state,
                                        seed_everything, seeded_rng_state, training_seed, unstreamed)


def _loader():
    """A batch source that draws from all three global generators, as nnU-Net's loader and augmentation do."""
    while True:
        yield (random.random(), float(np.random.rand()), float(torch.rand(1)))


def _draws(interleave: bool, seed: int = 5):
    """Three batches of a streamed loader; with ``interleave``, other code draws from the global generators
    between them (a method's dropout, noise, unannotated patches)."""
    seed_everything(123 if interleave else 456)  # the global generators differ between the two "methods"
    loader = StreamedLoader(_loader(), RandomStream(seed))
    out = []
    for _ in range(3):
        out.append(next(loader))
        if interleave:
            random.random(), np.random.rand(7), torch.rand(11)
    return out


def test_a_streamed_loader_draws_the_same_batches_whatever_is_drawn_around_it():
    assert _draws(interleave=True) == _draws(interleave=False)
    assert _draws(interleave=False, seed=5) != _draws(interleave=False, seed=6)


def test_the_stream_leaves_the_global_generators_where_they_were():
    seed_everything(9)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(9)
    loader = StreamedLoader(_loader(), RandomStream(1))
    next(loader), next(loader)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_the_stream_starts_as_seed_everything_would_and_unstreamed_bypasses_it():
    seed_everything(42)
    expected = global_rng_state()
    state = seeded_rng_state(42)
    assert state["python"] == expected["python"] and torch.equal(state["torch"], expected["torch"])
    assert all(np.array_equal(a, b) for a, b in zip(state["numpy"][1:], expected["numpy"][1:]))
    stream = RandomStream(3)
    loader = StreamedLoader(_loader(), stream)
    before = stream.state["python"]
    next(unstreamed(loader))  # a diagnostic draw: the stream does not move
    assert stream.state["python"] == before
    next(loader)
    assert stream.state["python"] != before
    plain = _loader()
    assert unstreamed(plain) is plain


def test_annotated_stream_seeds_differ_by_run_and_rank_and_from_the_global_seeds():
    seeds = {annotated_stream_seed(s, r) for s in range(3) for r in range(2)}
    assert len(seeds) == 6 and not seeds & {s + 1 for s in range(3)} and not seeds & {20190801 + s for s in range(3)}


@pytest.mark.parametrize("raw, expected", [("", 0), ("7", 7)])
def test_training_seed_from_the_environment(raw, expected):
    assert training_seed({"nnUNet_mt_seed": raw}) == expected


@pytest.mark.parametrize("raw", ["-1", "x"])
def test_a_bad_training_seed_is_named(raw):
    with pytest.raises(ValueError, match=f"nnUNet_mt_seed={raw!r}"):
        training_seed({"nnUNet_mt_seed": raw})
