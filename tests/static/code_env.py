"""Which environment variables the code reads, found by reading the code (no imports, no AWS).

Lambdas: starting from a handler module, follow its ``airflow_control_plane`` imports and
collect the first argument of ``require_str`` (required), ``optional_str``/``optional_int``/
``optional_bool``, ``os.environ.get``/``os.environ[...]``/``os.getenv`` (optional). Variables
starting with ``POWERTOOLS_`` are read by aws-lambda-powertools.

Airflow containers: ``AIRFLOW__{SECTION}__{KEY}`` must name an option that Airflow or one of
its installed providers declares (read from the runtime environment's config.yml and
``get_provider_info.py`` files, parsed, never imported); ``AIRFLOW_CONN_*`` is a connection;
anything else must be read by the image's entrypoint (airflow_image/entrypoint.py) or be one
of the few process-level settings listed in :data:`PROCESS_SETTINGS`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

REQUIRED_READERS = frozenset({"require_str"})
OPTIONAL_READERS = frozenset({"optional_str", "optional_int", "optional_bool"})
PACKAGE = "airflow_control_plane"
POWERTOOLS_PREFIX = "POWERTOOLS_"
# Read by the Python interpreter or by dumb-init in the image, not by our code.
PROCESS_SETTINGS = frozenset({"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "DUMB_INIT_SETSID"})


@dataclass(frozen=True)
class EnvReads:
    required: frozenset[str]
    optional: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        return self.required | self.optional


def _module_file(package_root: Path, module: str) -> Path | None:
    base = package_root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(tree: ast.AST, package_root: Path) -> Iterator[Path]:
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith(PACKAGE)]
        for name in names:
            path = _module_file(package_root, name)
            if path is not None:
                yield path


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_os_environ(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _first_str(args: list[ast.expr]) -> str | None:
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
        return args[0].value
    return None


def _reads_in(tree: ast.AST) -> tuple[set[str], set[str]]:
    required: set[str] = set()
    optional: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _call_name(node.func)
            value = _first_str(node.args)
            if value is None:
                continue
            if name in REQUIRED_READERS:
                required.add(value)
            elif (
                name in OPTIONAL_READERS
                or name == "getenv"
                or (
                    name == "get" and isinstance(node.func, ast.Attribute) and _is_os_environ(node.func.value)
                )
            ):
                optional.add(value)
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                required.add(key.value)
    return required, optional


def lambda_env_reads(handler_file: Path, package_root: Path) -> EnvReads:
    """Variables read by a handler module and the control-plane modules it imports."""
    seen: set[Path] = set()
    pending = [handler_file]
    required: set[str] = set()
    optional: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        found_required, found_optional = _reads_in(tree)
        required |= found_required
        optional |= found_optional
        pending.extend(p for p in _imported_modules(tree, package_root) if p not in seen)
    return EnvReads(frozenset(required), frozenset(optional - required))


# ---------------------------------------------------------------------- Airflow containers


@cache
def airflow_options(site_packages: Path) -> frozenset[tuple[str, str]]:
    """(section, option) pairs declared by Airflow core and the installed providers."""
    options: set[tuple[str, str]] = set()
    core = site_packages / "airflow" / "config_templates" / "config.yml"
    for section, body in (yaml.safe_load(core.read_text()) or {}).items():
        for option in (body or {}).get("options", {}) or {}:
            options.add((str(section), str(option)))
    for info in sorted((site_packages / "airflow" / "providers").rglob("get_provider_info.py")):
        for section, body in _provider_config(info).items():
            for option in (body or {}).get("options", {}) or {}:
                options.add((str(section), str(option)))
    return frozenset(options)


def _provider_config(path: Path) -> dict[str, dict[str, object]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
            info = ast.literal_eval(node.value)
            config = info.get("config", {}) if isinstance(info, dict) else {}
            return config if isinstance(config, dict) else {}
    return {}


@cache
def entrypoint_strings(entrypoint: Path) -> frozenset[str]:
    """Every string constant of the image entrypoint (the variable names it reads)."""
    tree = ast.parse(entrypoint.read_text(), filename=str(entrypoint))
    return frozenset(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def celery_hook_reads(package_root: Path) -> frozenset[str]:
    """Variables read (``env.get("X")``, ``os.environ...``) by the Celery hooks every Airflow
    container loads (``airflow_control_plane.scaling.celery_config`` and what it imports)."""
    start = package_root / PACKAGE / "scaling" / "celery_config.py"
    seen: set[Path] = set()
    todo = [start]
    names: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _call_name(node.func) in ("get", "getenv"):
                value = _first_str(node.args)
                if value is not None and value.isupper():
                    names.add(value)
        todo.extend(_imported_modules(tree, package_root))
    return frozenset(names)


# Sections the Celery provider passes on whole (``conf.getsection``) instead of declaring
# each option: [celery_broker_transport_options] becomes kombu's transport options.
_WHOLE_SECTIONS = {
    "celery_broker_transport_options": "airflow/providers/celery/executors/default_celery.py",
}


def _reads_whole_section(site_packages: Path, section: str) -> bool:
    source = site_packages / _WHOLE_SECTIONS[section]
    return source.is_file() and f'getsection("{section}")' in source.read_text()


def unknown_container_variable(
    name: str, site_packages: Path, entrypoint: Path, hook_reads: frozenset[str] = frozenset()
) -> str | None:
    """None if something reads ``name`` in an Airflow container, else why it looks unused."""
    if name.startswith("AIRFLOW__"):
        parts = name.split("__")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return f"{name} is not AIRFLOW__<SECTION>__<KEY>"
        section, option = parts[1].lower(), parts[2].lower()
        if section in _WHOLE_SECTIONS and _reads_whole_section(site_packages, section):
            return None  # every key of the section is passed on (kombu's transport options)
        if (section, option) not in airflow_options(site_packages):
            return f"{name}: Airflow and its providers declare no option [{section}] {option}"
        return None
    if name.startswith("AIRFLOW_CONN_"):
        return None
    if name in PROCESS_SETTINGS or name in entrypoint_strings(entrypoint) or name in hook_reads:
        return None
    return f"{name} is read neither by Airflow, nor by airflow_image/entrypoint.py, nor by the Celery hooks"
