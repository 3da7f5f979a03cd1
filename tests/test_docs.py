"""The documentation site (mkdocs.yml, docs/): every code block of every page runs (tests/docs_blocks.py), every
page of the navigation exists, the generated CLI reference documents every flag of every command, and the tables
and pages generated at build time come from their sources. `mkdocs build --strict` itself runs in CI (.ci/run)."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from tests.docs_blocks import REPO, PageRunner, blocks

DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models(tiny_model_dir, tiny_rm_dir, tiny_bert_dir) -> dict[str, str]:
    return {"causal": tiny_model_dir, "reward": tiny_rm_dir, "encoder": tiny_bert_dir}


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(DOCS).as_posix() for p in PAGES])
def test_every_code_block_of_the_page_runs(page, models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    counts = PageRunner(page, models, monkeypatch).run()
    assert counts["skipped"] <= 3, "skipped blocks are for what cannot run offline: keep them rare"


def test_skipped_blocks_are_few_and_say_why():
    skipped = [(page, b) for page in PAGES for b in blocks(page) if b.skip is not None]
    ran = [b for page in PAGES for b in blocks(page) if b.skip is None and b.lang != "text"]
    assert len(skipped) < len(ran) / 3
    assert all(len(b.skip.split()) >= 2 for _, b in skipped)


def _nav_files(nav) -> list[str]:
    files = []
    for entry in nav:
        if isinstance(entry, str):
            files.append(entry)
        else:
            for value in entry.values():
                files += _nav_files(value) if isinstance(value, list) else [value]
    return files


def test_the_navigation_has_every_page_and_every_page_is_in_it():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    hooks = _hooks()
    commands = (*hooks.TRAINING_COMMANDS, *hooks.OTHER_COMMANDS, *hooks.RECIPE_COMMANDS)
    generated = {*hooks.COPIED_PAGES, "cli/index.md", *(f"cli/{c}.md" for c in commands)}
    nav = _nav_files(config["nav"])
    written = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert len(nav) == len(set(nav))
    assert set(nav) == written | generated
    assert not written & generated
    for page in PAGES:  # real pages, not stubs: prose, or prose and the API reference of named modules
        text = page.read_text(encoding="utf-8")
        assert len(text.split()) > (20 if "\n::: trl_margins" in text else 150), page


def test_the_cli_reference_documents_every_flag_of_every_command():
    hooks = _hooks()
    pages = hooks.cli_pages()
    commands = (*hooks.TRAINING_COMMANDS, *hooks.OTHER_COMMANDS)
    assert set(pages) == {"cli/index.md", *(f"cli/{c}.md" for c in (*commands, *hooks.RECIPE_COMMANDS))}
    for command in commands:
        page = pages[f"cli/{command}.md"]
        parser = hooks.command_parser(command)
        flags = [o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")]
        assert len(flags) > 5
        missing = [flag for flag in flags if f"`{flag}`" not in page]
        assert not missing, f"trl-margins {command}: {missing[:5]}"
    for command in (*commands, *hooks.RECIPE_COMMANDS):
        assert f"[trl-margins {command}]({command}.md)" in pages["cli/index.md"]


def test_the_rounds_reference_documents_every_key_of_a_rounds_recipe():
    import dataclasses

    from trl_margins.pairs.rounds import RoundsConfig

    page = _hooks().cli_pages()["cli/rounds.md"]
    for field in dataclasses.fields(RoundsConfig):
        assert field.metadata.get("help"), field.name
        assert f"| `{field.name}` |" in page, field.name


def test_the_recipe_keys_table_is_the_mapping_the_commands_apply():
    from trl_margins.cli.recipe_keys import AMBIGUOUS_KEYS, REMOVED_KEYS, RENAMED_KEYS

    table = _hooks().recipe_keys_table()
    for old, (new, _) in RENAMED_KEYS.items():
        assert f"| `{old}` | `{new}` |" in table
    assert all(f"| `{key}` |" in table for key in [*REMOVED_KEYS, *AMBIGUOUS_KEYS])
    assert _hooks().RECIPE_KEYS_MARKER in (DOCS / "guides" / "recipes.md").read_text()


def test_copied_pages_are_their_sources_with_the_site_paths_of_the_figures():
    hooks = _hooks()
    results = hooks.copied_page("results.md")
    source = (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    assert "](quality/figures/" in source and "](quality/figures/" not in results
    figures = {f"figures/{p.relative_to(REPO / hooks.FIGURES).as_posix()}" for p in hooks.figure_files()}
    import re

    for link in re.findall(r"\]\((figures/[^)]+)\)", results):
        assert link in figures
    assert hooks.copied_page("changelog.md") == (REPO / "CHANGELOG.md").read_text(encoding="utf-8")


def test_nested_lists_are_indented_four_spaces_as_python_markdown_reads_them():
    sources = [*PAGES, REPO / "benchmarks" / "RESULTS.md", REPO / "CHANGELOG.md", REPO / "CONTRIBUTING.md"]
    flat = []
    for path in sources:
        fence = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            fence ^= line.startswith("```")
            if not fence and (line.startswith("  - ") or line.startswith("  * ")):
                flat.append(f"{path.relative_to(REPO)}:{number}")
    assert not flat, f"a nested list indented by 2 spaces renders flat in the site: {flat[:5]}"
