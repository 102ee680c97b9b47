"""Sequence models behind one contract (see `base.py`): RNN and Transformer encoder-decoders, decoder-only LMs."""

from unforced.models.base import Forced, ModelConfig, SequenceModel, repeat_rows, select_rows


def build_model(config: ModelConfig):
    """The model that `config.kind` names, with freshly initialised weights."""
    if config.kind == "hf":
        from unforced.models.hf import load_hf_model

        return load_hf_model(config.path, max_source_len=config.max_source_len,
                             max_target_len=config.max_target_len)
    if config.kind in ("gru", "lstm"):
        from unforced.models.rnn import RNNSeq2Seq

        return RNNSeq2Seq(config)
    from unforced.models.transformer import Transformer

    return Transformer(config)


__all__ = ["Forced", "ModelConfig", "SequenceModel", "build_model", "repeat_rows", "select_rows"]
