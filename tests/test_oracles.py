"""The edit-distance oracle (OCD) against a brute-force search over completions."""

from itertools import product

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unforced.tasks import get_task
from unforced.tasks.oracles import EditDistanceOracle, batched_labels, edit_distance_next_tokens
from unforced.vocab import EOS

ALPHABET = [4, 5, 6]


def distance(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        new = [i]
        for j, y in enumerate(b, 1):
            new.append(min(row[j] + 1, new[j - 1] + 1, row[j - 1] + (x != y)))
        row = new
    return row[-1]


def brute_force(prefix, references, longest):
    """Tokens that begin an optimal completion, found by trying every completion up to `longest` tokens."""
    best, first = None, set()
    for size in range(longest + 1):
        for tail in product(ALPHABET, repeat=size):
            cost = min(distance(prefix + list(tail), r) for r in references)
            token = tail[0] if tail else EOS
            if best is None or cost < best:
                best, first = cost, {token}
            elif cost == best:
                first.add(token)
    return first


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=4),
       st.lists(st.lists(st.sampled_from(ALPHABET), max_size=4), min_size=1, max_size=2))
def test_matches_brute_force(prefix, references):
    longest = max(len(r) for r in references) + 1
    expected = brute_force(prefix, references, longest)
    labels = edit_distance_next_tokens(torch.tensor([prefix + [0]]), [references])
    got = set(labels.tokens[0, len(prefix)][labels.valid[0, len(prefix)]].tolist())
    assert got == expected


def test_batched_equals_per_prefix_calls():
    task = get_task("noisy-copy", size=60)
    oracle = task.oracle
    batch = task.collate(task.train[:6])
    prefixes = torch.randint(3, task.target_tokenizer.vocab_size, batch.gold.shape, generator=torch.Generator().manual_seed(0))
    refs = [[task.target_tokenizer.encode(r) for r in refs] for refs in batch.references]
    labels = oracle.next_tokens(batch.sources, refs, prefixes)
    slow = batched_labels(lambda s, p: oracle(s, p), batch.sources, refs, prefixes)
    assert torch.equal(labels.mask(20), slow.mask(20))


def test_edit_distance_is_opt_in_on_toy_translation():
    assert get_task("toy-translation", size=40).oracle is None
    task = get_task("toy-translation", size=40, oracle="edit_distance")
    assert isinstance(task.oracle, EditDistanceOracle)
    example = task.train[0]
    assert task.oracle(example.source, []) == {task.target_tokenizer.encode(example.target)[0]}


def test_positional_oracle_batched_form_matches_calls():
    task = get_task("reverse", size=60)
    batch = task.collate(task.train[:5])
    fast = batched_labels(task.oracle, batch.sources, None, batch.gold)
    slow = batched_labels(lambda s, p: task.oracle(s, p), batch.sources, None, batch.gold)
    assert torch.equal(fast.mask(16), slow.mask(16))
