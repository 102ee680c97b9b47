"""Teacher forcing: one forced pass, and truncated backpropagation through a gold-fed rollout (`tbptt`)."""

from __future__ import annotations

import pytest
import torch

from unforced.errors import UnforcedError
from unforced.strategies import make_strategy
from unforced.strategies.teacher_forcing import TeacherForcing, TeacherForcingConfig

pytestmark = pytest.mark.usefixtures("single_thread")


def gradients(model, loss) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_tbptt_has_the_forced_loss_and_a_truncated_gradient(tiny_model, padded_batch, kind):
    model = tiny_model(kind)
    forced = TeacherForcing().loss(model, padded_batch, 0).loss
    cut = TeacherForcing(TeacherForcingConfig(tbptt=2)).loss(model, padded_batch, 0).loss
    whole = TeacherForcing(TeacherForcingConfig(tbptt=padded_batch.gold.shape[1])).loss(model, padded_batch, 0).loss
    assert abs(float(cut.detach()) - float(forced.detach())) < 1e-6
    assert abs(float(whole.detach()) - float(forced.detach())) < 1e-6
    full_gradient = gradients(model, forced)
    # A cut at every step beyond the width keeps the whole graph: stepping equals the fused pass.
    torch.testing.assert_close(gradients(model, whole), full_gradient, rtol=0.0, atol=1e-5)
    assert not torch.allclose(gradients(model, cut), full_gradient, atol=1e-5)


@pytest.mark.parametrize("kind", ["transformer", "decoder_only"])
def test_tbptt_on_a_transformer_raises_naming_the_field(tiny_model, padded_batch, kind):
    with pytest.raises(UnforcedError, match="teacher_forcing.tbptt.*recurrent"):
        TeacherForcing(TeacherForcingConfig(tbptt=2)).loss(tiny_model(kind), padded_batch, 0)


@pytest.mark.parametrize(("options", "name"), [({"tbptt": 0}, "tbptt"), ({"tbptt": -3}, "tbptt"),
                                               ({"tbptt": 2.5}, "tbptt"), ({"label_smoothing": 1.0},
                                                                           "label_smoothing")])
def test_bad_options_raise_naming_them(options, name):
    with pytest.raises(UnforcedError, match=f"teacher_forcing.{name}"):
        make_strategy("teacher_forcing", options)
