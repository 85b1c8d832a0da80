"""Training data: text tokenized once into a memory-mapped token file (as nanoGPT's prepare.py writes it),
llm.c's headered token shards, a character vocabulary for toy models (nanoGPT's shakespeare_char), JSONL of
{prompt, completion} for instruction tuning, and the batches drawn from them.

    DATA                       what it is read as
    notes.txt                  one document
    corpus/ (*.txt, *.jsonl)   every .txt a document, every JSONL line's "text" a document, sorted by path
    *.bin, or a folder of them llm.c's shards (fineweb_train_000001.bin ...; "val" in a name: the val split)
    hf:NAME                    a Hugging Face data set (the datasets library): every row's text field a
                               document; NAME a hub id, a local folder of data files, or a save_to_disk folder

Text is tokenized once, with the end-of-text token between documents, into
<DATA>.minigpt2-cache/<key>/tokens.bin beside the data (uint16, or uint32 past 65536 tokens), where key
hashes the files' contents and the tokenizer's: later runs, and resumes, read the tokens where they lie.
Beside read-only data, the cache is the user's: ~/.cache/minigpt2/tokens/<key>/.
A data set's tokens go under the datasets cache instead, HF_DATASETS_CACHE/minigpt2-tokens/<key>/, where
key hashes its name, configuration, split, text field and fingerprint (which changes with its content).
A batch is (input_ids, labels) [B, T] with labels in transformers' convention: the model shifts them
(position t predicts labels[t + 1]), and -100 is not counted.
"""

from .batches import IGNORE, Examples, Windows
from .sources import HUB_PREFIX, HubData, content_hash, documents, read_documents, read_instructions, read_text, source
from .tokens import CACHE_SUFFIX, check_fits, read_llmc_shard, split, token_streams
from .vocab import EOT, CharVocab

__all__ = [
    "CACHE_SUFFIX",
    "EOT",
    "HUB_PREFIX",
    "IGNORE",
    "CharVocab",
    "Examples",
    "HubData",
    "Windows",
    "check_fits",
    "content_hash",
    "documents",
    "read_documents",
    "read_instructions",
    "read_llmc_shard",
    "read_text",
    "source",
    "split",
    "token_streams",
]
