"""Build the shipped VADER preference dataset (``trl_margins/data/resources/vader/``) from the vaderSentiment
3.3.2 sdist.

The sdist (MIT) carries ``additional_resources/hutto_ICWSM_2014.tar.gz``: ~23,700 real sentences (tweets, movie
reviews, Amazon product reviews, NYT editorial snippets), each rated for sentiment on -4..+4 by 20 or more people,
with every raw rating. From it this script writes:

- ``sentences.jsonl``: every sentence with its raw ratings, mean and (population) standard deviation;
- ``train.jsonl`` / ``test.jsonl``: preference pairs of two real sentences of the same source, in TRL's preference
  format, with the mean-rating margin and the empirical human preference probability; the two splits share no
  sentence (and no review or editorial either, see ``_group_key``);
- ``README.md``: provenance, license, method, the command that built it, row counts.

Only the standard library is used, so the build does not depend on the package it feeds. Usage::

    python scripts/build_vader_dataset.py                        # downloads the sdist with pip into a temp dir
    python scripts/build_vader_dataset.py --sdist /tmp/vader/vaderSentiment-3.3.2.tar.gz
"""

from __future__ import annotations

import argparse
import html
import io
import json
import math
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

SDIST_NAME = "vaderSentiment-3.3.2"
INNER_ARCHIVE = f"{SDIST_NAME}/additional_resources/hutto_ICWSM_2014.tar.gz"
LICENSE_MEMBER = f"{SDIST_NAME}/LICENSE.txt"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "trl_margins" / "data" / "resources" / "vader"

# File prefix in the ICWSM archive -> (our source name, prompt). Every prompt asks for POSITIVE sentiment, so the
# sentence the raters found more positive is the better answer to it.
SOURCES: dict[str, tuple[str, str]] = {
    "tweets": ("tweets", "Write a positive tweet."),
    "movieReviewSnippets": ("movie_reviews", "Write a positive one-sentence movie review."),
    "amazonReviewSnippets": ("product_reviews", "Write a positive one-sentence review of an electronics product."),
    "nytEditorialSnippets": ("nyt_editorials", "Write a positive sentence for a newspaper editorial."),
}

SCORE_DECIMALS = 4


@dataclass(frozen=True)
class Sentence:
    id: str
    source: str
    text: str
    ratings: tuple[int, ...]

    @property
    def mean(self) -> float:
        return round(sum(self.ratings) / len(self.ratings), SCORE_DECIMALS)

    @property
    def std(self) -> float:
        # Population std, the convention of the archive's own STANDARD DEVIATION column.
        mu = sum(self.ratings) / len(self.ratings)
        return round(math.sqrt(sum((r - mu) ** 2 for r in self.ratings) / len(self.ratings)), SCORE_DECIMALS)


def human_pref_prob(chosen: tuple[int, ...], rejected: tuple[int, ...]) -> float:
    """Share of (chosen rating, rejected rating) pairs, over all combinations, with chosen rated higher; ties = 1/2."""
    rejected_counts = Counter(rejected)
    wins = Fraction(0)
    for a, count_a in Counter(chosen).items():
        for b, count_b in rejected_counts.items():
            if a > b:
                wins += count_a * count_b
            elif a == b:
                wins += Fraction(count_a * count_b, 2)
    return round(float(wins / (len(chosen) * len(rejected))), 6)


def clean_text(text: str) -> str:
    """Undo the archive's markup so a language model sees plain prose.

    Tweets keep HTML entities (``&amp;``), and the movie and NYT snippets write a double quote as two single quotes
    (the Pang & Lee / NYT tokenisation).
    """
    text = html.unescape(text).replace("''", '"')
    return re.sub(r"\s+", " ", text).strip()


def download_sdist(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "vadersentiment==3.3.2"]
        + ["-d", str(dest)],
        check=True,
    )
    return next(dest.glob(f"{SDIST_NAME}.tar.gz"))


def read_archive(sdist: Path) -> tuple[dict[str, bytes], str]:
    """Return the ICWSM text files (name -> bytes) and the vaderSentiment license text."""
    with tarfile.open(sdist) as outer:
        license_text = outer.extractfile(LICENSE_MEMBER).read().decode("utf-8")
        inner_bytes = outer.extractfile(INNER_ARCHIVE).read()
    files = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for member in inner.getmembers():
            if member.isfile() and member.name.endswith(".txt"):
                files[Path(member.name).name] = inner.extractfile(member).read()
    return files, license_text


def _rows(raw: bytes, n_fields: int) -> list[list[str]]:
    # Tab-separated, CRLF line ends, no header; one ratings file starts with a UTF-8 BOM (utf-8-sig drops it).
    rows = []
    for line in raw.decode("utf-8-sig").splitlines():
        if line.strip():
            fields = line.split("\t")
            if len(fields) != n_fields:
                raise ValueError(f"expected {n_fields} tab-separated fields, got {len(fields)}: {line[:80]!r}")
            rows.append(fields)
    return rows


def parse_sentences(files: dict[str, bytes]) -> tuple[list[Sentence], dict[str, int]]:
    """Join each source's text file (ID, mean, text) with its ratings file (ID, mean, std, raw ratings) on ID.

    Means and stds are recomputed from the raw ratings: they agree with the ratings file everywhere, but for 199 of
    the 1,000 tweets rated by ~95 people the text file's mean differs from the ratings' mean (it looks computed from
    another set of ratings), and the pairs' margin and human preference probability must come from the same ratings.
    Returns the sentences and, per source, how many text-file means disagree.
    """
    sentences, disagreements = [], {}
    for prefix, (source, _) in SOURCES.items():
        texts = {row[0]: (float(row[1]), row[2]) for row in _rows(files[f"{prefix}_GroundTruth.txt"], 3)}
        ratings = {row[0]: json.loads(row[3]) for row in _rows(files[f"{prefix}_anonDataRatings.txt"], 4)}
        if texts.keys() != ratings.keys():
            raise ValueError(f"{prefix}: the text and ratings files list different IDs")
        disagreements[source] = 0
        for raw_id, (text_mean, text) in texts.items():
            rs = tuple(int(r) for r in ratings[raw_id])
            if not all(-4 <= r <= 4 for r in rs):
                raise ValueError(f"{prefix} {raw_id}: rating outside -4..4")
            sentence = Sentence(id=f"{source}/{raw_id}", source=source, text=clean_text(text), ratings=rs)
            disagreements[source] += abs(text_mean - sum(rs) / len(rs)) > 1e-3
            sentences.append(sentence)
    return sentences, disagreements


def _group_key(sentence: Sentence) -> str:
    # Amazon and NYT IDs are "<review or editorial>_<sentence>": keep a document's sentences in one split so the test
    # set holds unseen documents, not neighbours of training sentences. Tweet and movie IDs are flat.
    raw_id = sentence.id.split("/", 1)[1]
    return f"{sentence.source}/{raw_id.split('_')[0]}" if "_" in raw_id else sentence.id


def _allocate(total: int, weights: dict[str, int]) -> dict[str, int]:
    """Split ``total`` across sources in proportion to ``weights`` (largest remainder, so the parts add up)."""
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def _sample_pairs(pool: list[Sentence], n_pairs: int, max_uses: int, rng: random.Random) -> list[Sentence]:
    """Draw ``n_pairs`` uniformly random pairs from ``pool``, each sentence in at most ``max_uses`` pairs.

    Every pass pairs neighbours of a fresh random permutation, so each candidate pair is a uniform random pair (small
    and large margins alike, as they occur in the data); a random subset of all candidates is kept.
    """
    candidates, seen = [], set()
    for _ in range(max_uses):
        order = rng.sample(pool, len(pool))
        for a, b in zip(order[::2], order[1::2]):
            key = frozenset((a.id, b.id))
            # Equal means carry no preference; equal texts (the archive has a few duplicates) are no choice at all.
            if a.mean == b.mean or a.text == b.text or key in seen:
                continue
            seen.add(key)
            candidates.append((a, b) if a.mean > b.mean else (b, a))
    if len(candidates) < n_pairs:
        raise ValueError(f"only {len(candidates)} valid pairs in a pool of {len(pool)} sentences, {n_pairs} wanted")
    return rng.sample(candidates, n_pairs)


def build_pairs(
    sentences: list[Sentence], n_train: int, n_test: int, max_chars: int, max_uses: int, seed: int
) -> tuple[list[dict], list[dict], dict[str, int]]:
    rng = random.Random(seed)
    pools: dict[str, list[Sentence]] = {source: [] for source, _ in SOURCES.values()}
    seen_texts = set()
    for s in sentences:
        # Drop repeated texts within a source, so a sentence cannot sit in both splits under two IDs.
        if len(s.text) <= max_chars and (s.source, s.text) not in seen_texts:
            seen_texts.add((s.source, s.text))
            pools[s.source].append(s)
    train_counts = _allocate(n_train, {k: len(v) for k, v in pools.items()})
    test_counts = _allocate(n_test, {k: len(v) for k, v in pools.items()})
    prompts = dict(SOURCES.values())

    train, test = [], []
    for source, pool in pools.items():
        # Whole groups go to the test split until it has enough sentences for its pairs with room to spare (20%
        # extra, for skipped ties); everything else trains.
        groups: dict[str, list[Sentence]] = {}
        for s in pool:
            groups.setdefault(_group_key(s), []).append(s)
        keys = sorted(groups)
        rng.shuffle(keys)
        test_pool, train_pool = [], []
        test_size = math.ceil(1.2 * 2 * test_counts[source] / max_uses)
        for key in keys:
            (test_pool if len(test_pool) < test_size else train_pool).extend(groups[key])
        for pairs, split_pool, count in ((test, test_pool, test_counts), (train, train_pool, train_counts)):
            for chosen, rejected in _sample_pairs(split_pool, count[source], max_uses, rng):
                pairs.append(
                    {
                        "prompt": prompts[source],
                        "chosen": chosen.text,
                        "rejected": rejected.text,
                        "score_chosen": chosen.mean,
                        "score_rejected": rejected.mean,
                        "margin": round(chosen.mean - rejected.mean, SCORE_DECIMALS),
                        "human_pref_prob": human_pref_prob(chosen.ratings, rejected.ratings),
                        "source": source,
                        "chosen_id": chosen.id,
                        "rejected_id": rejected.id,
                    }
                )
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test, {k: len(v) for k, v in pools.items()}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def _quantiles(values: list[float]) -> str:
    v = sorted(values)
    return ", ".join(f"{q}%: {v[min(len(v) - 1, int(q / 100 * len(v)))]:.2f}" for q in (0, 10, 50, 90, 100))


def render_readme(
    command: str,
    license_text: str,
    sentences: list[Sentence],
    disagreements: dict[str, int],
    pools: dict[str, int],
    train: list[dict],
    test: list[dict],
    args: argparse.Namespace,
) -> str:
    sources = [source for source, _ in SOURCES.values()]
    all_counts = Counter(s.source for s in sentences)
    train_counts, test_counts = Counter(r["source"] for r in train), Counter(r["source"] for r in test)
    table = "\n".join(
        f"| `{s}` | {all_counts[s]} | {pools[s]} | {train_counts[s]} | {test_counts[s]} | {prompt} |"
        for s, prompt in ((s, dict(SOURCES.values())[s]) for s in sources)
    )
    total = f"| total | {len(sentences)} | {sum(pools.values())} | {len(train)} | {len(test)} | |"
    agree = sum(r["human_pref_prob"] > 0.5 for r in train + test) / len(train + test)
    license_block = "\n".join("    " + line if line else "" for line in license_text.strip().splitlines())
    return f"""# VADER human sentiment ratings as preference pairs

Real sentences with real human ratings, shipped with `trl_margins` for the offline examples and tests. Load them with
`trl_margins.data.assets.load_vader_preferences(split)` and `trl_margins.data.assets.load_vader_sentences()`.

## Source

C.J. Hutto and Eric Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text",
Eighth International Conference on Weblogs and Social Media (ICWSM-14), Ann Arbor, MI, June 2014.

The data is the paper's rating set, `additional_resources/hutto_ICWSM_2014.tar.gz` in the sdist of
[vaderSentiment](https://github.com/cjhutto/vaderSentiment) 3.3.2 on PyPI: tweet-like texts, sentence snippets of
movie reviews (from Pang & Lee, 2004), of Amazon reviews of five electronics products (from Hu & Liu, 2004) and of
New York Times editorials. Each sentence was rated from -4 (extremely negative) to +4 (extremely positive) by at least
20 screened raters (about 95 for 1,000 of the tweets; 15 to 29 for the movie snippets, in the raw data).

## License

vaderSentiment, including this data, is distributed under the MIT License:

{license_block}

## Files

- `sentences.jsonl`: every sentence of the archive, one per line: `id` (`<source>/<archive id>`), `source`, `text`,
  `mean` and `std` (population) of `ratings`, the raw integer ratings.
- `train.jsonl`, `test.jsonl`: preference pairs in TRL's format: `prompt`, `chosen`, `rejected` (two sentences of the
  same source; `chosen` has the higher mean rating), `score_chosen`, `score_rejected` (mean ratings), `margin`
  (`score_chosen - score_rejected`, > 0), `human_pref_prob`, `source`, `chosen_id`, `rejected_id` (ids in
  `sentences.jsonl`).

| source | sentences | eligible for pairs | train pairs | test pairs | prompt |
|---|---|---|---|---|---|
{table}
{total}

## How the pairs were built

1. Texts are cleaned lightly: HTML entities unescaped (`&amp;` in tweets), the archive's `''` written as `"`,
   whitespace collapsed. Means and stds are recomputed from the raw ratings and rounded to {SCORE_DECIMALS} decimals.
   {sum(disagreements.values())} tweets have a mean in the archive's text file that differs from the mean of their
   raw ratings (the ratings file itself agrees with them); the raw ratings are used everywhere here.
2. Sentences longer than {args.max_chars} characters, and repeats of a text already seen in the same source, are left
   out of the pairs (they stay in `sentences.jsonl`).
3. Each source is split into test and train sentences at random (seed {args.seed}); Amazon reviews and NYT editorials
   move as whole documents, so test sentences come from documents never seen in training. Train and test share no
   sentence.
4. Within a split and source, pairs are uniformly random pairs of sentences (neighbours in random permutations), each
   sentence in at most {args.max_uses} pairs, skipping pairs with equal means or equal texts; the pairs per source
   are proportional to the source's eligible sentences. Margins therefore span the whole range (train margin
   quantiles: {_quantiles([r["margin"] for r in train])}).
5. `human_pref_prob` is the empirical probability that a rater prefers `chosen`: over every combination of one rating
   of `chosen` and one rating of `rejected`, the share where `chosen` is rated higher, ties counting one half. It is
   above 0.5 for {agree:.1%} of the pairs; close pairs sit near 0.5, so it is a natural soft target for MMPO.

Every prompt asks for a POSITIVE sentence in the source's register, so the more positive sentence is the better answer.

## Rebuild

```
{command}
```

Running it again reproduces these files byte for byte.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, help="vaderSentiment-3.3.2.tar.gz; downloaded with pip when omitted")
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--num_train", type=int, default=4000, help="training pairs")
    parser.add_argument("--num_test", type=int, default=500, help="held-out pairs")
    parser.add_argument("--max_chars", type=int, default=200, help="longest sentence used in a pair")
    parser.add_argument("--max_uses", type=int, default=2, help="most pairs a sentence may appear in")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or download_sdist(Path(tmp))
        files, license_text = read_archive(sdist)
    sentences, disagreements = parse_sentences(files)
    sizes = (args.num_train, args.num_test, args.max_chars, args.max_uses, args.seed)
    train, test, pools = build_pairs(sentences, *sizes)

    # The command in the README names only the options that differ from the defaults, and no local paths.
    defaults = vars(parser.parse_args([]))
    options = [f"--{k} {v}" for k, v in vars(args).items() if k not in ("sdist", "output_dir") and v != defaults[k]]
    command = " ".join(["python scripts/build_vader_dataset.py", *options])

    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(
        args.output_dir / "sentences.jsonl",
        [
            {"id": s.id, "source": s.source, "text": s.text, "mean": s.mean, "std": s.std, "ratings": list(s.ratings)}
            for s in sentences
        ],
    )
    write_jsonl(args.output_dir / "train.jsonl", train)
    write_jsonl(args.output_dir / "test.jsonl", test)
    readme = render_readme(command, license_text, sentences, disagreements, pools, train, test, args)
    (args.output_dir / "README.md").write_text(readme, encoding="utf-8")
    for name in ("sentences.jsonl", "train.jsonl", "test.jsonl", "README.md"):
        path = args.output_dir / name
        print(f"{path}: {path.stat().st_size / 1e6:.2f} MB")
    print(f"{len(sentences)} sentences, {len(train)} train pairs, {len(test)} test pairs")


if __name__ == "__main__":
    main()
