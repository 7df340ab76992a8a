"""A run's data: evaluation sets and training sources, loaded once and rendered in their prompt format.

Loading everything before the first cell makes missing data fail at once, not after hours of
work; the rendered items (not the raw ones) are what stage keys hash, so a change of prompt
format or few-shot context is a change of input. Few-shot examples come from the training part
of a task's ``fewshot_source``, never from its evaluation items; lm-eval's own tasks
(``lm_eval:NAME``) are loaded by lm-eval, and their items identify the documents it will score.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from spd_bench.config import stable_hash
from spd_bench.engine.plan import source_format

if TYPE_CHECKING:
    from spd_bench.config import RunConfig
    from spd_bench.engine.plan import Plan
    from spd_bench.tasks import DataContext, LoadedData, LoadedSource


class RunInputs:
    """Evaluation items per task and training items per source, each loaded and rendered on first use.

    ``model_folder`` gives the resolved model's folder; its tokenizer renders chat prompts and is
    loaded only when a chat format is in use.
    """

    def __init__(self, config: RunConfig, plan: Plan, model_folder: Callable[[], Path]) -> None:
        self.config = config
        self.plan = plan
        self._model_folder = model_folder
        self._tokenizer: Any = None
        self._sources: dict[str, LoadedSource] = {}
        self._raw_sources: dict[str, LoadedSource] = {}
        self._questions: dict[str, list[dict[str, Any]]] = {}  # evaluation items as loaded, before few-shot and rendering
        self._eval: dict[str, LoadedData] = {}
        self._source_keys: dict[str, str] = {}

    def eval_data(self, name: str) -> LoadedData:
        """Task ``name``'s items, limited and rendered; ``details["items_hash"]`` goes into its score key."""
        if name not in self._eval:
            from spd_bench.tasks import LoadedData, add_fewshot, check_disjoint, load_eval

            task = self.plan.tasks[name]
            if task.kind == "lm_eval":
                from spd_bench.scoring.lmeval_tasks import load_docs

                items, details = load_docs(task, self.config.limit)
                data = LoadedData(items=items, layer="lm-eval", details=details)
            else:
                data = load_eval(task, self._data_context(), self.config.limit)
                self._questions[name] = data.items
                if task.num_fewshot:
                    pool = self._raw_source(task.fewshot_source)
                    check_disjoint(pool, data.items, name)
                    data.items = add_fewshot(task, data.items, pool.train, task.num_fewshot)
                    data.details = {**data.details, "num_fewshot": task.num_fewshot, "fewshot_source": task.fewshot_source,
                                    "fewshot_draw": "seeded by task and item id, from the source's training part"}
                data.items = self._render(data.items, task.prompt_format, task.kind)
            data.details = {**data.details, "items_hash": stable_hash(data.items)}
            self._eval[name] = data
        return self._eval[name]

    def _raw_source(self, name: str) -> LoadedSource:
        """A source's items as its loader returns them (no --n-train cut, no rendering), loaded once."""
        if name not in self._raw_sources:
            from spd_bench.tasks import get_source, load_source

            spec = self.plan.sources[name] if name in self.plan.sources else get_source(name)
            self._raw_sources[name] = load_source(spec, self._data_context())
        return self._raw_sources[name]

    def source_data(self, name: str) -> LoadedSource:
        """Source ``name``'s training and calibration items, rendered, checked disjoint from every task's items."""
        if name not in self._sources:
            from spd_bench.tasks import LoadedSource, check_disjoint

            data = self._raw_source(name)
            for task_name, task in self.plan.tasks.items():
                if task.kind != "lm_eval":
                    self.eval_data(task_name)
                    check_disjoint(data, self._questions[task_name], task_name)
            train = data.train if self.config.n_train is None else data.train[: self.config.n_train]
            prompt_format = source_format(self.plan.tasks, name)
            kind = self.plan.sources[name].kind
            data = LoadedSource(
                train=self._render(train, prompt_format, kind),
                calibration=self._render(data.calibration, prompt_format, kind),
                layer=data.layer, details={**data.details, "n_train": len(train), "prompt_format": prompt_format},
            )
            self._sources[name] = data
        return self._sources[name]

    def source_key(self, name: str) -> str:
        """The identity of a source's rendered items: what the prepare and sample stages depend on."""
        if name not in self._source_keys:
            data = self.source_data(name)
            self._source_keys[name] = stable_hash(
                {"spec": self.plan.sources[name].to_dict(), "train": data.train, "calibration": data.calibration}
            )
        return self._source_keys[name]

    def _data_context(self) -> DataContext:
        from spd_bench.tasks import DataContext

        return DataContext(cache_dir=Path(self.config.cache_dir), paths=dict(self.config.data))

    def _render(self, items: list[dict[str, Any]], prompt_format: str, kind: str) -> list[dict[str, Any]]:
        if prompt_format == "plain":
            return items
        from spd_bench.prompts import render_items
        from spd_bench.tokenization import load_tokenizer

        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._model_folder())
        return render_items(items, self._tokenizer, prompt_format, kind)
