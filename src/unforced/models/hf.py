"""Bring your own model: any Hugging Face `transformers` model behind the library's Model contract (models/base.py).

    HuggingFaceModel(model)     an encoder-decoder (`config.is_encoder_decoder`, e.g. T5, BART) or a causal LM
                                (e.g. GPT-2) that reads the source as a prefix, like `kind="decoder_only"`
    load_hf_model(path)         a saved model (and its tokenizer, if saved beside it) from a local directory

`forced` is the model's own parallel forward; `step` feeds one token with the model's KV cache. Transformers 5
keeps the cache in `Cache` objects, which `select_rows` cannot index, so a state holds the cache as plain tuples of
per-layer (keys, values), batch first, and each step rebuilds a `DynamicCache` from them.

Special ids. The library fixes pad = 0, bos = 1, eos = 2, unk = 3 (tasks/tokenizers.py). A model built from a
config with those ids (`pad_token_id=0`, `bos_token_id` / `decoder_start_token_id=1`, `eos_token_id=2`) uses
them as they are, with the library's own tokenizers. A model whose ids differ gets a permutation of its vocabulary
(`library_to_model`) that swaps its special ids into 0..3: every id going in is mapped to the model's, every logit
column coming out is mapped back, and `HFTokenizerAdapter` maps its tokenizer's ids the same way, so rollouts,
rewards and metrics never know. Pad, start and end must be distinct; `load_hf_model` adds the missing ones to
the tokenizer (a pad for GPT-2, which has none; a start token where it equals the end, as in GPT-2; a pad where
decoding starts from pad, as in T5) and resizes the embeddings: those rows start untrained.

A decoder-only model reads source and target through one embedding table, so its task needs one shared vocabulary
(`check_task` says so otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from unforced.errors import UnforcedError
from unforced.models.base import Forced
from unforced.vocab import BOS, EOS, PAD, UNK


@dataclass
class HFConfig:
    """What the rest of the library reads of a wrapped model (`max_target_len` caps decoding, as for our own).

    kind is always "hf"; name_or_path says where the weights came from (None for a model built in memory).
    """

    kind: str = "hf"
    name_or_path: str | None = None
    is_encoder_decoder: bool = True
    source_vocab: int = 0
    target_vocab: int = 0
    max_source_len: int = 512
    max_target_len: int = 512


@dataclass
class HFMemory:
    states: Tensor | None  # (batch, source, width) encoder output; None for decoder-only
    mask: Tensor  # (batch, source) True on real source tokens
    source: Tensor | None = None  # (batch, source) model token ids, decoder-only only


@dataclass
class HFState:
    self_cache: tuple  # per layer (keys, values), each (batch, heads, time, head width)
    cross_cache: tuple  # per layer (keys, values) over the source; () until the first step (encoder-decoder)
    key_mask: Tensor  # (batch, time) True where a cached key may be attended to
    position: Tensor  # (batch,) position id of the next token (decoder-only)


def _cache_tuples(cache) -> tuple:
    return tuple((layer.keys, layer.values) for layer in cache.layers)


def special_permutation(vocab_size: int, pad: int, bos: int, eos: int, unk: int | None = None) -> Tensor:
    """(vocab,) library id -> model id: the model's special ids swapped into 0..3, everything else in place."""
    wanted = [(PAD, pad, "pad"), (BOS, bos, "bos"), (EOS, eos, "eos")] + ([(UNK, unk, "unk")] if unk is not None
                                                                          else [])
    ids = [model_id for _, model_id, _ in wanted]
    if len(set(ids)) != len(ids):
        names = ", ".join(f"{name}={model_id}" for _, model_id, name in wanted)
        raise UnforcedError(f"the model's special ids must be distinct ({names}): add the missing tokens to its "
                            f"tokenizer and resize its embeddings (load_hf_model does this)")
    for _, model_id, name in wanted:
        if not 0 <= model_id < vocab_size:
            raise UnforcedError(f"the model's {name} id {model_id} is outside its vocabulary ({vocab_size})")
    permutation = torch.arange(vocab_size)
    for library_id, model_id, _ in wanted:
        where = int((permutation == model_id).nonzero()[0, 0])
        permutation[where], permutation[library_id] = permutation[library_id].clone(), model_id
    return permutation


class HuggingFaceModel(nn.Module):
    """A `transformers` PreTrainedModel behind encode / forced / start / step; see the module docstring."""

    def __init__(self, model, max_source_len: int | None = None, max_target_len: int | None = None,
                 library_to_model: Tensor | None = None, name_or_path: str | None = None):
        super().__init__()
        self.model = model
        self.decoder_only = not getattr(model.config, "is_encoder_decoder", False)
        vocab = model.get_output_embeddings().weight.shape[0]
        text = model.config.get_text_config(decoder=True)
        positions = getattr(text, "n_positions", None) or getattr(text, "max_position_embeddings", None)
        if self.decoder_only:
            positions = positions or 1024
            max_source_len = max_source_len or positions // 2
            max_target_len = max_target_len or positions - max_source_len - 1
            if max_source_len + max_target_len + 1 > positions:
                raise UnforcedError(f"max_source_len + max_target_len + 1 ({max_source_len + max_target_len + 1}) "
                                    f"exceeds the model's {positions} positions")
        else:  # relative positions (T5) have no limit; learned ones (BART) do
            max_source_len = max_source_len or positions or 512
            max_target_len = max_target_len or (positions - 1 if positions else 512)
        self.config = HFConfig(name_or_path=name_or_path, is_encoder_decoder=not self.decoder_only,
                               source_vocab=vocab, target_vocab=vocab, max_source_len=max_source_len,
                               max_target_len=max_target_len)
        if library_to_model is None:
            self.library_to_model = None
        else:
            if library_to_model.shape != (vocab,):
                raise UnforcedError(f"library_to_model must have one entry per vocabulary id ({vocab})")
            self.register_buffer("library_to_model", library_to_model.long(), persistent=False)
        self.tokenizer = None  # an HFTokenizerAdapter where load_hf_model found one

    # ---- ids ---------------------------------------------------------------------------------------------------
    def _ids(self, tokens: Tensor) -> Tensor:
        return tokens if self.library_to_model is None else self.library_to_model[tokens]

    def _logits(self, logits: Tensor) -> Tensor:
        return logits if self.library_to_model is None else logits.index_select(-1, self.library_to_model)

    def check_task(self, task) -> None:
        """Refuse a task whose vocabularies this model cannot read (naming why)."""
        vocab = self.config.target_vocab
        for side in ("source", "target"):
            size = getattr(task, f"{side}_tokenizer").vocab_size
            if size > vocab:
                raise UnforcedError(f"task {task.name!r}: the {side} vocabulary ({size}) is larger than the "
                                    f"model's ({vocab})")
        if self.decoder_only and task.source_tokenizer is not task.target_tokenizer \
                and task.source_tokenizer.to_json() != task.target_tokenizer.to_json():
            raise UnforcedError(f"task {task.name!r}: a decoder-only Hugging Face model reads source and target "
                                f"with one embedding table, so it needs a shared vocabulary; this task has separate "
                                f"source and target tokenizers")

    # ---- the contract ------------------------------------------------------------------------------------------
    def embed(self, tokens: Tensor) -> Tensor:
        # The model's own input table (decoder side for encoder-decoders), scaled as the model scales its ids.
        table = self.model.get_decoder().get_input_embeddings() if not self.decoder_only \
            and hasattr(self.model, "get_decoder") else self.model.get_input_embeddings()
        return table(self._ids(tokens))

    def output_embedding(self) -> Tensor:
        weight = self.model.get_output_embeddings().weight
        return weight if self.library_to_model is None else weight.index_select(0, self.library_to_model)

    def encode(self, source: Tensor, source_mask: Tensor) -> HFMemory:
        mask = source_mask.bool()
        ids = self._ids(source)
        if self.decoder_only:
            return HFMemory(states=None, mask=mask, source=ids)
        out = self.model.get_encoder()(input_ids=ids, attention_mask=mask.long())
        return HFMemory(states=out.last_hidden_state, mask=mask)

    def _prefix_positions(self, mask: Tensor) -> Tensor:
        return (mask.long().cumsum(1) - 1).clamp(min=0)  # (batch, source): padding repeats the last position

    def forced(self, memory: HFMemory, inputs: Tensor, embeddings: Tensor | None = None) -> Forced:
        b, t = inputs.shape
        if not self.decoder_only:
            from transformers.modeling_outputs import BaseModelOutput

            feed = {"decoder_input_ids": self._ids(inputs)} if embeddings is None \
                else {"decoder_inputs_embeds": embeddings}
            out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=memory.states),
                             attention_mask=memory.mask.long(), use_cache=False, output_hidden_states=True, **feed)
            return Forced(logits=self._logits(out.logits), hidden=out.decoder_hidden_states[-1])
        # [source (right-padded), <bos>, y_1 ...]; each row's target positions follow its own source.
        mask = memory.mask
        s = mask.shape[1]
        first = mask.long().sum(1, keepdim=True)
        steps = torch.arange(t, device=inputs.device)[None, :]
        positions = torch.cat([self._prefix_positions(mask), first + steps], 1)
        attention = torch.cat([mask, mask.new_ones(b, t)], 1).long()
        if embeddings is None:
            feed = {"input_ids": torch.cat([memory.source, self._ids(inputs)], 1)}
        else:
            prefix = self.model.get_input_embeddings()(memory.source)
            feed = {"inputs_embeds": torch.cat([prefix, embeddings.to(prefix.dtype)], 1)}
        out = self.model(attention_mask=attention, position_ids=positions, use_cache=False,
                         output_hidden_states=True, **feed)
        return Forced(logits=self._logits(out.logits[:, s:]), hidden=out.hidden_states[-1][:, s:])

    def start(self, memory: HFMemory, batch_size: int) -> HFState:
        device = memory.mask.device
        if not self.decoder_only:
            return HFState(self_cache=(), cross_cache=(),
                           key_mask=torch.zeros(batch_size, 0, dtype=torch.bool, device=device),
                           position=torch.zeros(batch_size, dtype=torch.long, device=device))
        from transformers import DynamicCache

        mask = memory.mask
        out = self.model(input_ids=memory.source, attention_mask=mask.long(),
                         position_ids=self._prefix_positions(mask), past_key_values=DynamicCache(), use_cache=True)
        return HFState(self_cache=_cache_tuples(out.past_key_values), cross_cache=(), key_mask=mask,
                       position=mask.long().sum(1))

    def step(self, memory: HFMemory, state: HFState, tokens: Tensor, embeddings: Tensor | None = None):
        from transformers import DynamicCache, EncoderDecoderCache

        if int(state.position.max()) >= self.config.max_target_len + (
                self.config.max_source_len + 1 if self.decoder_only else 1):
            raise UnforcedError(f"decoding past the model's last position (max_target_len "
                                f"{self.config.max_target_len})")
        self_cache = DynamicCache(ddp_cache_data=state.self_cache) if state.self_cache else DynamicCache()
        if not self.decoder_only:
            from transformers.modeling_outputs import BaseModelOutput

            cross = DynamicCache(ddp_cache_data=state.cross_cache) if state.cross_cache else DynamicCache()
            feed = {"decoder_input_ids": self._ids(tokens)[:, None]} if embeddings is None \
                else {"decoder_inputs_embeds": embeddings[:, None]}
            out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=memory.states),
                             attention_mask=memory.mask.long(), past_key_values=EncoderDecoderCache(self_cache, cross),
                             use_cache=True, output_hidden_states=True, **feed)
            cache = out.past_key_values
            new_state = HFState(self_cache=_cache_tuples(cache.self_attention_cache),
                                cross_cache=_cache_tuples(cache.cross_attention_cache),
                                key_mask=torch.cat([state.key_mask, state.key_mask.new_ones(tokens.shape[0], 1)], 1),
                                position=state.position + 1)
            return self._logits(out.logits[:, 0]), out.decoder_hidden_states[-1][:, 0], new_state
        key_mask = torch.cat([state.key_mask, state.key_mask.new_ones(tokens.shape[0], 1)], 1)
        feed = {"input_ids": self._ids(tokens)[:, None]} if embeddings is None \
            else {"inputs_embeds": embeddings[:, None]}
        out = self.model(attention_mask=key_mask.long(), position_ids=state.position[:, None],
                         past_key_values=self_cache, use_cache=True, output_hidden_states=True, **feed)
        new_state = HFState(self_cache=_cache_tuples(out.past_key_values), cross_cache=(), key_mask=key_mask,
                            position=state.position + 1)
        return self._logits(out.logits[:, 0]), out.hidden_states[-1][:, 0], new_state


class HFTokenizerAdapter:
    """A `transformers` tokenizer behind the library's Tokenizer protocol, in library ids (specials at 0..3).

    encode: the tokenizer's ids without added specials, mapped through the inverse of `library_to_model`.
    decode: library ids up to the first <eos>, pad and bos dropped, mapped to the model's ids and decoded with
    `skip_special_tokens=True` (library id 3 is the model's unk where it has one, else an ordinary token).
    """

    kind = "hf"

    def __init__(self, tokenizer, library_to_model: Tensor | None, vocab_size: int,
                 name_or_path: str | None = None):
        self._tok = tokenizer
        self.vocab_size = vocab_size
        self.name_or_path = name_or_path
        self._to_model = None if library_to_model is None else library_to_model.tolist()
        self._to_library = None
        if library_to_model is not None:
            self._to_library = torch.argsort(library_to_model).tolist()

    def encode(self, text: str) -> list[int]:
        ids = self._tok(text, add_special_tokens=False)["input_ids"]
        return ids if self._to_library is None else [self._to_library[i] for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        kept = []
        for i in ids:  # not tokenizers._strip: library id 3 may be an ordinary token of this model
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS) and 0 <= i < self.vocab_size:
                kept.append(i)
        if self._to_model is not None:
            kept = [self._to_model[i] for i in kept]
        return self._tok.decode(kept, skip_special_tokens=True)

    def to_json(self) -> str:
        """The tokenizer itself, not a pointer to the model: a fast tokenizer's own JSON (`tokenizers`'s
        `to_str()`), the id permutation and the decode clean-up, which `tasks.tokenizers.tokenizer_from_json`
        reads back as a `SavedHFTokenizer` that encodes and decodes the same, without loading transformers or the
        model. A slow (Python) tokenizer has no such JSON: its record names the model directory only."""
        backend = getattr(self._tok, "backend_tokenizer", None)
        if backend is None:
            return json.dumps({"kind": "hf", "name_or_path": self.name_or_path})
        # transformers skips its clean-up for BPE models unless forced (tokenization_utils_tokenizers._decode)
        clean_up = bool(getattr(self._tok, "clean_up_tokenization_spaces", False)) and not (
            type(backend.model).__name__ == "BPE"
            and not getattr(self._tok, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
                            False))
        return json.dumps({"kind": "hf", "name_or_path": self.name_or_path, "tokenizer": backend.to_str(),
                           "library_to_model": self._to_model, "vocab_size": self.vocab_size,
                           "clean_up_tokenization_spaces": clean_up})


def _add_missing_specials(model, tokenizer) -> None:
    """Give the model distinct start, end and pad ids: GPT-2 has no pad and starts with its end token; T5 starts
    decoding from its pad token. New tokens get new (untrained) embedding rows."""
    config = model.config
    start_name = "decoder_start_token_id" if config.is_encoder_decoder else "bos_token_id"
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    start, pad = getattr(config, start_name, None), config.pad_token_id
    added = {}
    if eos is None:
        added["eos_token"] = "<unforced-eos>"
    if start is None or start == eos:
        added["bos_token"] = "<unforced-bos>"
    if pad is None or pad in (start, eos):
        added["pad_token"] = "<unforced-pad>"
    if not added:
        return
    tokenizer.add_special_tokens(added)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if "eos_token" in added:
        config.eos_token_id = tokenizer.eos_token_id
    if "bos_token" in added:
        setattr(config, start_name, tokenizer.bos_token_id)
    if "pad_token" in added:
        config.pad_token_id = tokenizer.pad_token_id


def load_hf_model(path_or_name: str | Path, local_files_only: bool | None = None,
                  max_source_len: int | None = None, max_target_len: int | None = None) -> HuggingFaceModel:
    """A saved model (`save_pretrained`) wrapped as a HuggingFaceModel; `.tokenizer` holds its tokenizer adapted to
    library ids where one was saved beside it (else None: use the library's tokenizers, whose ids the model must
    share). A local directory never reaches the network; a hub name does only with local_files_only=False."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    except ImportError:
        raise UnforcedError("Hugging Face models need transformers: pip install 'unforced[hf]'") from None
    path = Path(path_or_name)
    if local_files_only is None:
        local_files_only = path.is_dir()  # a directory never needs the hub
    source = str(path_or_name)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_files_only)
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        model = auto.from_pretrained(source, local_files_only=local_files_only)
    except (OSError, ValueError) as error:
        raise UnforcedError(f"{source}: cannot load a Hugging Face model ({error})".split("\n")[0]) from None
    tokenizer = None
    # transformers 5 builds an empty tokenizer for a directory that holds none: look for the files first.
    saved = not path.is_dir() or any((path / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))
    if saved:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
        except (OSError, ValueError, TypeError):
            tokenizer = None
    return wrap_hf_model(model, tokenizer, max_source_len, max_target_len, name_or_path=source, add_specials=True)


def wrap_hf_model(model, tokenizer=None, max_source_len: int | None = None, max_target_len: int | None = None,
                  name_or_path: str | None = None, add_specials: bool = False) -> HuggingFaceModel:
    """A `transformers` model already in memory behind the Model contract (sharing its parameters: nothing is
    copied), with `tokenizer` adapted to library ids as `.tokenizer` (None without one). The model needs distinct
    pad, start and end ids; with `add_specials` missing ones are added to the model and tokenizer (new embedding
    rows), otherwise a model without them is refused with what to add (the user's model is never changed)."""
    source = name_or_path or type(model).__name__
    if tokenizer is not None and add_specials:
        _add_missing_specials(model, tokenizer)
    config = model.config
    bos = config.decoder_start_token_id if config.is_encoder_decoder else config.bos_token_id
    pad, eos = config.pad_token_id, config.eos_token_id
    if isinstance(eos, list):
        eos = eos[0]
    vocab = model.get_output_embeddings().weight.shape[0]
    unk = getattr(tokenizer, "unk_token_id", None) if tokenizer is not None else None
    if None in (pad, bos, eos) or len({pad, bos, eos}) < 3:
        start = "decoder_start_token_id" if config.is_encoder_decoder else "bos_token_id"
        advice = ("no tokenizer was saved to add them" if add_specials else
                  "give it distinct ones before measuring, e.g. tokenizer.add_special_tokens({'pad_token': "
                  "'<pad>'}), model.resize_token_embeddings(len(tokenizer)) and set model.config.pad_token_id")
        raise UnforcedError(f"{source}: the model needs distinct pad, {start} and eos ids (pad={pad}, start={bos}, "
                            f"eos={eos}); {advice}")
    permutation = None
    if (pad, bos, eos) != (PAD, BOS, EOS) or (unk is not None and unk != UNK):
        permutation = special_permutation(vocab, pad, bos, eos, unk if unk not in (pad, bos, eos) else None)
    wrapper = HuggingFaceModel(model, max_source_len, max_target_len, permutation, name_or_path=name_or_path)
    if tokenizer is not None:
        wrapper.tokenizer = HFTokenizerAdapter(tokenizer, permutation, vocab, name_or_path)
    return wrapper.eval()
