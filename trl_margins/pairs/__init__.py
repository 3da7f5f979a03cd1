"""The data side's commands as library functions, named as the commands are: `generate` (N completions per prompt
from a policy), `annotate` (reward-model scores for every response), `select` (pairs kept by their margin) and
`fit_gamma` (MMPO's `mmpo_gamma` fitted to preference probabilities).

Imports `data`, `evaluation`, `errors` and `_compat`: no trainer, no command line.
"""
