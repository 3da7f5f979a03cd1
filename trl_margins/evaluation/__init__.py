"""How well a model's rewards rank and predict preferences.

- `calibration`: accuracy, expected calibration error, Brier score and reliability tables of reward gaps;
- `rewardbench`: RewardBench's section scores (v1) and best-of-4 and Ties scores (v2);
- `plots`: the reliability diagram and the histogram of reward margins (matplotlib);
- `rewards`: the rewards of pairs under a reward model or a DPO / SimPO policy, as TRL's trainers compute them;
- `before_after`: the held-out evaluation before and after a training run.

Imports `data`, `losses`, `errors` and `_compat`: no trainer, no command line.
"""
