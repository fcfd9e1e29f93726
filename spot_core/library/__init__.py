"""A portable prompt library: the source prompts of a study (or of any finished runs) in one folder that another
machine opens with no tracking store.

    <library>/index.json                                what the entries are, with every file's sha256
    <library>/prompts/<id>/best_prompt.safetensors      the source prompt (SPoT: the best checkpoint)
                          /task_embedding.safetensors   the prompt after `embedding_step` steps
                          /initial_prompt.safetensors   the prompt before training (for displacement embeddings)
                          /neurons.safetensors          its activated-neuron mask, when the study recorded one

index.json is `{"format": "spot-prompt-library", "version": 1, "entries": [...]}`, an entry's fields those of
`Entry` (`Entry.to_json`). An entry's id is the first 16 hex digits of the sha256 over its three prompt files'
sha256s: the same prompts always get the same id, so a re-export or a merge keeps one copy of each. A neuron mask
is not in the id: it may be recorded after a first export, and the entry then gains it under the same id.

Every write is atomic and follows the umask; index.json is written last. An export killed midway leaves the
library it started from, plus an entry folder index.json does not list (`verify` names it; the next export of
that run replaces it).
"""

from spot_core.library.entry import (
    FILES,
    PROMPT_FILES,
    Change,
    Definition,
    Entry,
    FileRef,
    LibraryError,
    SourceRun,
    entry_id,
    no_definition,
    sha256,
)
from spot_core.library.folder import FORMAT, VERSION, Library, merge, write

__all__ = [
    "Change",
    "Definition",
    "Entry",
    "FILES",
    "FORMAT",
    "FileRef",
    "Library",
    "LibraryError",
    "PROMPT_FILES",
    "SourceRun",
    "VERSION",
    "entry_id",
    "merge",
    "no_definition",
    "sha256",
    "write",
]
