"""``.airflowignore`` evaluated on a Git tree exactly as Airflow 3.3 evaluates it on a folder.

Mirrors ``airflow._shared.module_loading.file_discovery`` (``_find_path_from_directory``,
``_GlobIgnoreRule``, ``_RegexpIgnoreRule``): each folder's ``.airflowignore`` adds its
patterns to those inherited from its parents; comments (``\\s*#.*``) and empty lines are
dropped; an ignored folder is not walked. ``glob`` (Airflow's default ``[core]
dag_ignore_file_syntax``) uses gitignore's wildmatch through ``pathspec``: a pattern with a
``/`` at its start or middle is relative to the folder of its ``.airflowignore``, any other
matches the name at any depth below it, a trailing ``/`` matches folders only, and a later
``!pattern`` re-includes (``GitIgnoreSpecPattern``: the class Airflow's deprecated
``GitWildMatchPattern`` is, without its warning). ``regexp`` searches each pattern in the
path relative to the bundle root. DAG sync only uses this to skip compiling files Airflow
never parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

from airflow_control_plane.errors import ConfigError

IGNORE_FILE = ".airflowignore"
SYNTAXES = ("glob", "regexp")
_COMMENT = re.compile(r"\s*#.*")


@dataclass(frozen=True)
class GlobRule:
    pattern: GitIgnoreSpecPattern
    relative_to: str | None  # folder of the .airflowignore ("" = root), or None: match the name
    dir_only: bool


@dataclass(frozen=True)
class RegexpRule:
    pattern: re.Pattern[str]


Rule = GlobRule | RegexpRule


def check_syntax(syntax: str) -> str:
    if syntax not in SYNTAXES:
        raise ConfigError(f"dag_ignore_file_syntax must be one of {', '.join(SYNTAXES)}, got {syntax!r}")
    return syntax


def compile_rules(text: str, folder: str, syntax: str) -> list[Rule]:
    """The rules one ``.airflowignore`` in ``folder`` (repository-relative, "" = root) adds."""
    rules: list[Rule] = []
    for line in text.split("\n"):
        pattern = _COMMENT.sub("", line)
        if not pattern:
            continue
        rule = _compile_regexp(pattern) if syntax == "regexp" else _compile_glob(pattern, folder)
        if rule is not None:
            rules.append(rule)
    return rules


def _compile_regexp(pattern: str) -> Rule | None:
    try:
        return RegexpRule(re.compile(pattern))
    except re.error:
        return None  # Airflow logs and skips an invalid pattern


def _compile_glob(pattern: str, folder: str) -> Rule | None:
    if pattern.strip() == "/":
        return None
    relative_to = folder if pattern.startswith("/") or "/" in pattern.rstrip("/") else None
    raw = pattern.lstrip("!")
    dir_only = raw.rstrip() != raw.rstrip().rstrip("/")
    return GlobRule(GitIgnoreSpecPattern(pattern), relative_to, dir_only)


def is_ignored(path: str, is_dir: bool, rules: list[Rule]) -> bool:
    """``path`` is repository-relative (to the published root), ``/``-separated."""
    if not rules:
        return False
    if isinstance(rules[0], RegexpRule):
        return any(isinstance(r, RegexpRule) and r.pattern.search(path) is not None for r in rules)
    matched = False
    name = path.rsplit("/", 1)[-1]
    for rule in rules:
        assert isinstance(rule, GlobRule)
        if rule.dir_only and not is_dir:
            continue
        if rule.relative_to is None:
            rel = name
        else:
            rel = path[len(rule.relative_to) + 1 :] if rule.relative_to else path
        if is_dir:
            rel += "/"
        if rule.pattern.include is not None and rule.pattern.match_file(rel) is not None:
            matched = bool(rule.pattern.include)
    return matched
