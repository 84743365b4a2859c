"""A run's whole config, checked when the run starts: a bad value fails in a second, before any
query, instead of after an hour of queries and downloads in the stage that reads it.

Dagster checks the shape of a run config (names, types) at launch, but the rules of the
``Config`` classes (ranges, patterns, thresholds in order: ``config_rules``) only run when a step
builds its config. ``run_config_problems`` builds every op's ``Config`` from the run config at
once. The CLI calls it before it launches anything; ``checked_executor``, the code location's
executor, calls it in the run worker before the first step, so runs launched from the UI, a
sensor, a schedule or a backfill are refused the same way.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from dagster import Config, Executor, ExecutorDefinition, JobDefinition, multi_or_in_process_executor
from pydantic import ValidationError

from mlm_pipeline.endpoints import ConfigError


class RunConfigError(ConfigError):
    """Values of a run config that break a rule; one line per value, each naming its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("run config refused before any query:\n  " + "\n  ".join(problems))
        self.problems = problems


def config_classes(job: JobDefinition) -> dict[str, type[Config]]:
    """Op name -> the ``Config`` class its function takes, read from the job itself."""
    classes = {}
    for node in job.graph.nodes:
        compute = getattr(node.definition, "compute_fn", None)
        if compute is None or not compute.has_config_arg():
            continue
        annotation = compute.get_config_arg().annotation
        if isinstance(annotation, type) and issubclass(annotation, Config):
            classes[node.name] = annotation
    return classes


def problem_lines(path: str, error: ValidationError) -> Iterator[str]:
    for item in error.errors(include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        loc = ".".join(str(part) for part in item["loc"])
        if not loc:  # a rule over several fields: its message names them
            yield f"{path}: {message}"
        elif message.startswith((f"{loc}:", f"{loc}=")):
            yield f"{path}.{message}"
        elif str(item["input"]) in message:
            yield f"{path}.{loc}: {message}"
        else:
            yield f"{path}.{loc}: {message} (got {item['input']!r})"


def run_config_problems(run_config: Mapping[str, Any], classes: Mapping[str, type[Config]]) -> list[str]:
    """Every value of ``run_config`` (or default, where it gives none) that its ``Config`` refuses."""
    ops = (run_config or {}).get("ops") or {}
    problems: list[str] = []
    for name, cls in sorted(classes.items()):
        entry = ops.get(name) or {}
        values = entry.get("config") if isinstance(entry, Mapping) else None
        if values is not None and not isinstance(values, Mapping):
            continue  # a wrong shape: Dagster's own check at launch names it
        try:
            cls(**(values or {}))
        except ValidationError as error:
            problems.extend(problem_lines(f"ops.{name}.config", error))
    return problems


def check_run_config(run_config: Mapping[str, Any], job: JobDefinition) -> None:
    if problems := run_config_problems(run_config, config_classes(job)):
        raise RunConfigError(problems)


def check_release_key(key: str, run_config: Mapping[str, Any]) -> None:
    """A release partition added by hand ("Add partition" in the UI) that the embedded world never
    published is refused here, before any step, naming the releases it did publish. The source is
    the code location's, with what the run config sets of it (the launchpad may raise
    ``world_version``). Other sources are asked by the first stage, which compares the key with
    the data version they serve."""
    from mlm_pipeline.resources import wikimedia_from_env

    chosen = ((run_config.get("resources") or {}).get("wikimedia") or {}).get("config") or {}
    source = wikimedia_from_env().model_copy(update=dict(chosen))
    if source.source == "embedded":
        source.world_spec(key)  # ConfigError naming the published releases


class _CheckingExecutor(Executor):
    """Dagster's default executor, after the run config has passed ``check_run_config``."""

    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    def execute(self, plan_context, execution_plan):  # type: ignore[no-untyped-def]
        check_run_config(plan_context.run_config, plan_context.job.get_definition())
        if key := plan_context.dagster_run.tags.get("dagster/partition"):
            check_release_key(key, plan_context.run_config)
        yield from self._inner.execute(plan_context, execution_plan)

    @property
    def retries(self):  # type: ignore[no-untyped-def]
        return self._inner.retries

    @property
    def step_dependency_config(self):  # type: ignore[no-untyped-def]
        return self._inner.step_dependency_config


checked_executor = ExecutorDefinition(
    name="checked_multi_or_in_process_executor",
    config_schema=multi_or_in_process_executor.config_schema,
    requirements=multi_or_in_process_executor.get_requirements,
    executor_creation_fn=lambda init: _CheckingExecutor(multi_or_in_process_executor.executor_creation_fn(init)),
    description="Dagster's multi_or_in_process_executor (same config), refusing a bad run config before any step.",
)
