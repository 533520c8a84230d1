"""RunConfig: validation messages, TOML round trip, CLI-style task parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.errors import ConfigError


def test_defaults_follow_the_method() -> None:
    c = RunConfig().validate()
    # The default search is EvoPress from the baselines: 32 random starts, 100 generations of 16
    # children on 512 tokens and the best 2 on all (about the original GA's cost).
    assert (c.algorithm, c.init, c.offspring, c.survivors) == ("evopress", "heuristics", 16, 2)
    assert (c.population, c.generations, c.selection_tokens) == (32, 100, 512)
    assert c.baselines == ["shortgpt", "angular", "last_k", "greedy"]
    assert c.max_evaluations == 32 + 100 * 16  # genomes scored, screened ones included
    assert (c.cxpb, c.mutpb, c.tournament) == (0.5, 0.5, 5)
    assert c.protect == 2 and c.limit == 100 and c.fitness == "kl"
    assert [t.name for t in c.tasks] == ["hellaswag_offline", "openbookqa_offline"]
    # The original method's GA keeps its own sizes: 60 x 10, 660 evaluations at most.
    ga = RunConfig.from_dict({"algorithm": "ga"}).validate()
    assert (ga.population, ga.generations) == (60, 10)
    assert ga.max_evaluations == 60 * 11 and ga.search_algorithm == "ga"
    # Sizes a file gives win over the algorithm's defaults.
    small = RunConfig.from_dict({"algorithm": "ga", "population": 8}).validate()
    assert (small.population, small.generations) == (8, 10)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("algorithm", "cma", "algorithm must be one of evopress, ga"),
        ("baselines", "shortgpt,magic", "unknown baseline 'magic'"),
        ("offspring", 0, "offspring must be an integer >= 1"),
        ("survivors", 0, "survivors must be an integer >= 1"),
        ("selection_tokens", 64, "selection_tokens must be an integer >= 128"),
    ],
)
def test_bad_search_settings_name_the_field_and_the_fix(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        RunConfig(**{field: value}).validate()
    assert "\n" not in str(err.value)


def test_the_ga_needs_a_population_of_two() -> None:
    RunConfig(population=0).validate()  # evopress: no random starts, the baselines only
    with pytest.raises(ConfigError, match="population must be an integer >= 2"):
        RunConfig(population=1, algorithm="ga").validate()
    with pytest.raises(ConfigError, match="population must be an integer >= 2"):
        RunConfig(population=1, objective="pareto", prune_range=[2, 4]).validate()


def test_baselines_parse_and_round_trip(tmp_path: Path) -> None:
    c = RunConfig(baselines="greedy, shortgpt,greedy").validate()  # type: ignore[arg-type]
    assert c.baselines == ["greedy", "shortgpt"]
    assert RunConfig(baselines="none").validate().baselines == []  # type: ignore[arg-type]
    c.selection_tokens = None
    path = tmp_path / "run.toml"
    c.save(path)
    again = RunConfig.load(path).validate()
    assert again.baselines == ["greedy", "shortgpt"] and again.selection_tokens is None
    assert again.screen_limit is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prune", 0, "prune must be an integer >= 1"),
        ("population", -1, "population must be an integer >= 0"),
        ("cxpb", 1.5, r"cxpb must be a probability in \[0, 1\]"),
        ("mutpb", -0.1, r"mutpb must be a probability in \[0, 1\]"),
        ("fitness", "max", "fitness must be one of squared_mean, mean"),
        ("invalid", "drop", "invalid must be one of repair, zero"),
        ("dtype", "int8", "dtype must be one of"),
        ("device", "gpu", "device must be auto, cpu, mps, cuda or cuda:N"),
        ("limit", 0, "limit must be an integer >= 1"),
        ("tasks", [], "no tasks given"),
        ("include_path", ["/nonexistent/tasks"], "is not a folder"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        RunConfig(**{field: value}).validate()
    assert "\n" not in str(err.value)


def test_layer_checks() -> None:
    with pytest.raises(ConfigError, match="prune=28 must be below the 28 droppable layers"):
        RunConfig(prune=28).check_layers(30)
    with pytest.raises(ConfigError, match="protect=30 leaves no droppable layer"):
        RunConfig(protect=30).check_layers(30)
    RunConfig(prune=27).check_layers(30)


def test_dtype_aliases() -> None:
    assert RunConfig(dtype="bf16").validate().dtype == "bfloat16"


def test_toml_round_trip(tmp_path: Path) -> None:
    c = RunConfig(
        tasks=[TaskSpec("hellaswag_offline", metric="acc", limit=10), TaskSpec("arc_easy_offline")],
        prune=3,
        fitness="squared_mean",
        screen=5,
    ).validate()
    path = tmp_path / "run.toml"
    c.save(path)
    assert RunConfig.load(path) == c


def test_toml_accepts_task_names_and_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('tasks = ["hellaswag_offline:acc", "piqa_offline"]\nprune = 2\n')
    c = RunConfig.load(path)
    assert c.tasks == [TaskSpec("hellaswag_offline", "acc"), TaskSpec("piqa_offline")]
    path.write_text("prunes = 2\n")
    with pytest.raises(ConfigError, match="unknown key 'prunes'"):
        RunConfig.load(path)


def test_malformed_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("prune = = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        RunConfig.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "missing.toml")


def test_all_items_limit_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    RunConfig(limit=None).save(path)
    assert 'limit = "all"' in path.read_text()
    assert RunConfig.load(path).limit is None
