"""A small byte-level BPE tokenizer trained on the suite's own text (closed vocabulary).

Prompt and completion tokenize the same whether they are encoded apart (as spd-bench does) or
together (as lm-eval does before splitting): every newline is its own pre-token, and the
byte-level pre-tokenizer splits at the other boundaries ("A:" | " 16"), so no merge crosses
the prompt/answer boundary. Numbers are not split into digits: the frequent ones (up to about
100) become single tokens, which lets a 1M-parameter model learn some arithmetic within a few
minutes (spelled digit by digit, math stayed near 5% in the same budget). A BOS token is added
to every encoded prompt, as Llama tokenizers do; answers are encoded without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

PAD, BOS, EOS = "<pad>", "<s>", "</s>"


def train_tokenizer(texts: Iterable[str], folder: Path, vocab_size: int = 800) -> Any:
    """Train on ``texts``, save to ``folder`` with save_pretrained, and return the fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n"), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    fast.save_pretrained(folder)
    return PreTrainedTokenizerFast.from_pretrained(folder)
