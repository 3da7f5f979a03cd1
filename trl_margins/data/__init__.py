"""The data side of the margin knobs: validated margins and weights, datasets by name, the bundled assets, the
handbook's and TRL's dataset mixtures, TRL's preference formats, and the published datasets' adapters.

- `margins`: scores to margins (the internal margin and weight columns, the negative-margin policies);
- `loading`: datasets by name (local files, the hub, `trl_margins:vader`);
- `assets`: the bundled VADER pairs, SmolLM2 and all-MiniLM-L6-v2 (no hub);
- `mixtures`: the alignment handbook's and TRL's dataset mixtures, keeping the score columns;
- `formatting`: chat-wrapped pairs, KTO's unpaired rows, and pairs tokenized as TRL's trainers tokenize them;
- `adapters/`: UltraFeedback, SHP, reward-annotated completions and Argilla ratings as scored pairs.

Imports `datasets`, TRL's public data helpers, `errors` and `losses`: no trainer, no evaluation, no command line.
"""
