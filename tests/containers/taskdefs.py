"""The template's ECS task definitions, read from the translated template, as local containers.

Pure functions (no Docker here): :func:`container_specs` turns every ``AWS::ECS::TaskDefinition``
of the SAM-translated template into :class:`ContainerSpec` values (command, environment,
secrets, mounts, stop timeout, health check, CPU), resolving the intrinsic functions the
template uses against the parameter defaults. :func:`local_secret_values` gives every
``AWS::SecretsManager::Secret`` a local value in the form the template gives it (generated
strings, JSON documents, connection URLs composed with ``Fn::Sub`` and dynamic references),
with the cloud endpoints in connection URLs replaced by the local PostgreSQL and Redis.
:func:`resolve_secret` then resolves a container's ``ValueFrom`` the way ECS does, including
the ``arn:...:secret:NAME:json-key:version-stage:version-id`` form.

Nothing is hard-coded about which secrets, variables or containers exist: everything is
iterated from the template, so a renamed variable, a wrong command or a changed secret in
template.yaml shows up in the containers the tests run.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.static.tools import PSEUDO_PARAMETERS, load_template, translate

SECRET_ARN_PREFIX = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
_SECRET_ARN = re.compile(
    r"^arn:aws:secretsmanager:[^:]*:[^:]*:secret:(?P<id>[^:]+)(?::(?P<key>[^:]*):(?P<stage>[^:]*):(?P<version>[^:]*))?$"
)
_DYNAMIC_REF = re.compile(r"\{\{resolve:secretsmanager:(?P<ref>[^}]+)\}\}")


class _NoValue:
    """``Ref: AWS::NoValue``: CloudFormation drops the list item or property that holds it."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()
_SUB_VAR = re.compile(r"\$\{(?P<name>!?[^}]+)\}")


class TemplateError(ValueError):
    """The template uses something this harness cannot resolve locally (said precisely)."""


# ---------------------------------------------------------------------------- the values


@dataclass(frozen=True)
class HealthCheck:
    """An ECS container health check (seconds), as the task definition states it."""

    command: tuple[str, ...]
    interval: int = 30
    timeout: int = 5
    retries: int = 3
    start_period: int = 0

    def shell_command(self) -> str:
        """Docker's ``--health-cmd`` is shell form; ``exec`` keeps ECS's CMD-form process tree
        (the checked command is the process the runtime starts and kills on timeout)."""
        kind, *argv = self.command
        if kind == "CMD":
            import shlex

            return "exec " + shlex.join(argv)
        if kind == "CMD-SHELL":
            return argv[0]
        raise TemplateError(f"health check command must start with CMD or CMD-SHELL, got {kind!r}")


@dataclass(frozen=True)
class SecretRef:
    name: str  # the environment variable
    secret_id: str  # logical id of the AWS::SecretsManager::Secret
    json_key: str | None = None


@dataclass(frozen=True)
class Mount:
    container_path: str
    read_only: bool
    efs_root: str | None  # the EFS access point's root directory (None: not EFS)
    volume: str


@dataclass(frozen=True)
class ContainerSpec:
    task_definition: str  # logical id
    family: str
    name: str
    image: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    secrets: tuple[SecretRef, ...]
    mounts: tuple[Mount, ...]
    stop_timeout: int | None
    health: HealthCheck | None
    task_cpu: int  # CPU units of the task (1024 = one vCPU)
    task_memory: int  # MiB
    essential: bool = True
    port_mappings: tuple[int, ...] = field(default_factory=tuple)
    # The task definition's EntryPoint (empty: the image's); the command is its arguments.
    entry_point: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cpus(self) -> float:
        """Docker ``--cpus`` equal to the task's CPU share."""
        return self.task_cpu / 1024


# ---------------------------------------------------------------------------- intrinsics


class Resolver:
    """Evaluates the intrinsic functions of a CloudFormation template with parameter defaults.

    ``Ref`` to a secret gives its ARN (as CloudFormation does), so ``ValueFrom`` strings built
    with ``Fn::Sub``/``Fn::Join`` (``${Secret}:key::``) come out in ECS's ARN form. Other
    resources resolve to readable placeholders (``<LogicalId>``, ``<LogicalId.Attribute>``):
    values that depend on them (cloud endpoints) are replaced by local ones where they are used.
    """

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, str] | None = None) -> None:
        self.template = template
        self.resources: Mapping[str, Any] = template.get("Resources", {})
        declared: Mapping[str, Any] = template.get("Parameters", {})
        self.parameters: dict[str, Any] = {}
        for name, spec in declared.items():
            if parameters and name in parameters:
                self.parameters[name] = parameters[name]
            elif "Default" in spec:
                self.parameters[name] = spec["Default"]
        unknown = set(parameters or {}) - set(declared)
        if unknown:
            raise TemplateError(f"unknown template parameters: {sorted(unknown)}")

    def ref(self, name: str) -> Any:
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if name == "AWS::StackName":
            return "local"
        if name == "AWS::URLSuffix":
            return "amazonaws.com"
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            value = self.parameters[name]
            return [str(v) for v in value] if isinstance(value, list) else str(value)
        resource = self.resources.get(name)
        if resource is None:
            raise TemplateError(f"Ref to {name!r}: no such parameter (without default) or resource")
        if resource.get("Type") == "AWS::SecretsManager::Secret":
            return SECRET_ARN_PREFIX + name
        return f"<{name}>"

    def get_att(self, logical_id: str, attribute: str) -> str:
        if logical_id not in self.resources:
            raise TemplateError(f"Fn::GetAtt on unknown resource {logical_id!r}")
        return f"<{logical_id}.{attribute}>"

    def condition(self, name: str) -> bool:
        conditions = self.template.get("Conditions", {})
        if name not in conditions:
            raise TemplateError(f"unknown condition {name!r}")
        return bool(self.resolve(conditions[name]))

    def sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group("name")
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return str(self.ref(name))

        return _SUB_VAR.sub(replace, text)

    def resolve(self, node: Any) -> Any:  # noqa: C901 - one branch per intrinsic
        if isinstance(node, list):
            return [v for v in (self.resolve(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                parts = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(parts[0], parts[1])
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, {})
                return self.sub(arg[0], arg[1])
            if key == "Fn::Join":
                return str(arg[0]).join(str(v) for v in self.resolve(arg[1]))
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if key == "Fn::Split":
                return str(self.resolve(arg[1])).split(arg[0])
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                left, right = self.resolve(arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(arg))
            if key == "Fn::Or":
                return any(self.resolve(arg))
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::FindInMap":
                map_name, top, second = (str(self.resolve(part)) for part in arg[:3])
                try:
                    return self.template["Mappings"][map_name][top][second]
                except KeyError:
                    raise TemplateError(
                        f"Fn::FindInMap {map_name}/{top}/{second} is not in Mappings"
                    ) from None
            if key == "Fn::GetAZs":
                return ["us-east-1a", "us-east-1b"]
            if key.startswith("Fn::"):
                raise TemplateError(f"intrinsic {key} is not supported by the local harness")
        return {k: r for k, r in ((k, self.resolve(v)) for k, v in node.items()) if r is not NO_VALUE}

    def resources_created(self) -> dict[str, Any]:
        """The resources CloudFormation creates with these parameters (their ``Condition`` holds)."""
        return {
            logical_id: resource
            for logical_id, resource in self.resources.items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }


# ---------------------------------------------------------------------------- reading


def translated_template(path: Path) -> dict[str, Any]:
    """The template as CloudFormation deploys it (SAM translated offline, as tests/static does)."""
    return translate(load_template(path), path.parent)


def _health(raw: Mapping[str, Any] | None) -> HealthCheck | None:
    if not raw:
        return None
    return HealthCheck(
        command=tuple(str(part) for part in raw["Command"]),
        interval=int(raw.get("Interval", 30)),
        timeout=int(raw.get("Timeout", 5)),
        retries=int(raw.get("Retries", 3)),
        start_period=int(raw.get("StartPeriod", 0)),
    )


def _efs_root(resolver: Resolver, volume: Mapping[str, Any]) -> str | None:
    efs = volume.get("EFSVolumeConfiguration")
    if not efs:
        return None
    root = str(efs.get("RootDirectory", "/"))
    access_point = ((efs.get("AuthorizationConfig") or {}).get("AccessPointId")) or None
    if isinstance(access_point, dict) and "Ref" in access_point:
        ap = resolver.resources[access_point["Ref"]]["Properties"]
        # With an access point, the access point's root is the volume's root (ECS requires
        # the volume's RootDirectory to be "/" or omitted then).
        root = str(resolver.resolve(ap.get("RootDirectory", {}).get("Path", "/")))
    return root


def _secret_ref(resolver: Resolver, raw: Mapping[str, Any]) -> SecretRef:
    value_from = str(resolver.resolve(raw["ValueFrom"]))
    match = _SECRET_ARN.match(value_from)
    if not match:
        raise TemplateError(
            f"secret {raw['Name']}: ValueFrom {value_from!r} is not a Secrets Manager secret of this template"
        )
    if match.group("stage") or match.group("version"):
        raise TemplateError(f"secret {raw['Name']}: version stages/ids are not supported locally")
    return SecretRef(name=str(raw["Name"]), secret_id=match.group("id"), json_key=match.group("key") or None)


def container_specs(
    template: Mapping[str, Any], parameters: Mapping[str, str] | None = None
) -> Iterator[ContainerSpec]:
    """Every container of every ECS task definition in the (translated) template."""
    resolver = Resolver(template, parameters)
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::ECS::TaskDefinition":
            continue
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue  # not created with these parameters
        props = resource["Properties"]
        volumes = {v["Name"]: v for v in props.get("Volumes", [])}
        for raw in props["ContainerDefinitions"]:
            mounts = []
            for mount in raw.get("MountPoints", []):
                volume = volumes.get(mount["SourceVolume"])
                if volume is None:
                    raise TemplateError(
                        f"{logical_id}/{raw['Name']}: mount of unknown volume {mount['SourceVolume']!r}"
                    )
                mounts.append(
                    Mount(
                        container_path=str(mount["ContainerPath"]),
                        read_only=bool(mount.get("ReadOnly", False)),
                        efs_root=_efs_root(resolver, volume),
                        volume=str(mount["SourceVolume"]),
                    )
                )
            yield ContainerSpec(
                task_definition=logical_id,
                family=str(resolver.resolve(props.get("Family", logical_id))),
                name=str(raw["Name"]),
                image=str(resolver.resolve(raw["Image"])),
                command=tuple(str(part) for part in resolver.resolve(raw.get("Command", []))),
                environment={
                    str(e["Name"]): str(e["Value"]) for e in resolver.resolve(raw.get("Environment", []))
                },
                secrets=tuple(_secret_ref(resolver, s) for s in resolver.resolve(raw.get("Secrets", []))),
                mounts=tuple(mounts),
                stop_timeout=int(raw["StopTimeout"]) if "StopTimeout" in raw else None,
                health=_health(resolver.resolve(raw.get("HealthCheck"))),
                task_cpu=int(resolver.resolve(props["Cpu"])),
                task_memory=int(resolver.resolve(props["Memory"])),
                essential=bool(raw.get("Essential", True)),
                port_mappings=tuple(int(p["ContainerPort"]) for p in raw.get("PortMappings", [])),
                entry_point=tuple(str(part) for part in resolver.resolve(raw.get("EntryPoint", []))),
            )


def service_hostnames(
    template: Mapping[str, Any], parameters: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The Cloud Map names tasks use to reach each other (``<service>.<namespace>``)."""
    resolver = Resolver(template, parameters)
    resources = template.get("Resources", {})
    names = []
    for resource in resources.values():
        if resource.get("Type") != "AWS::ServiceDiscovery::Service":
            continue
        props = resource["Properties"]
        namespace_ref = props.get("NamespaceId", {})
        if not (isinstance(namespace_ref, dict) and "Ref" in namespace_ref):
            continue
        namespace = resources[namespace_ref["Ref"]]["Properties"]
        names.append(f"{resolver.resolve(props['Name'])}.{resolver.resolve(namespace['Name'])}")
    return tuple(names)


# ---------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class LocalBackends:
    """Where the cloud endpoints of connection URLs point locally, keyed by URL scheme."""

    urls_by_scheme: Mapping[str, str]


def _generated(spec: Mapping[str, Any], token: Callable[[int], str]) -> str:
    length = int(spec.get("PasswordLength", 32))
    value = token(length)
    template = spec.get("SecretStringTemplate")
    if template is not None:
        document = json.loads(template)
        document[spec["GenerateStringKey"]] = value
        return json.dumps(document)
    return value


def _alphanumeric(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _fernet_key() -> str:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functions" / "fernet_key"))
    try:
        from app import new_fernet_key  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return str(new_fernet_key())


# A secret whose value a custom resource writes gets the value that resource's code writes.
CUSTOM_RESOURCE_WRITERS: Mapping[str, Callable[[], str]] = {"Custom::FernetKey": _fernet_key}


def _written_by_custom_resource(template: Mapping[str, Any], secret_id: str) -> str | None:
    for resource in template.get("Resources", {}).values():
        kind = str(resource.get("Type", ""))
        if not (kind.startswith("Custom::") or kind == "AWS::CloudFormation::CustomResource"):
            continue
        refs = [v for v in (resource.get("Properties") or {}).values() if v == {"Ref": secret_id}]
        if refs:
            return kind
    return None


def _localize(value: str, backends: LocalBackends) -> str:
    scheme = urlsplit(value).scheme
    if scheme and "://" in value:
        if scheme not in backends.urls_by_scheme:
            raise TemplateError(f"a secret holds a {scheme}:// URL and no local backend is known for it")
        return backends.urls_by_scheme[scheme]
    return value


def _dynamic_value(ref: str, values: Mapping[str, str], resolver: Resolver) -> str | None:
    # ref: "<arn or name>:SecretString[:json-key[:stage[:version]]]"
    arn, _, rest = ref.partition(":SecretString")
    match = _SECRET_ARN.match(arn)
    secret_id = match.group("id") if match else arn
    if secret_id not in values:
        return None
    value = values[secret_id]
    key = rest.lstrip(":").split(":")[0] if rest.strip(":") else ""
    return str(json.loads(value)[key]) if key else value


def local_secret_values(  # noqa: C901 - one branch per way a template gives a secret its value
    template: Mapping[str, Any],
    backends: LocalBackends,
    parameters: Mapping[str, str] | None = None,
    token: Callable[[int], str] = _alphanumeric,
) -> dict[str, str]:
    """A local value for every AWS::SecretsManager::Secret, keyed by logical id."""
    resolver = Resolver(template, parameters)
    pending = {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == "AWS::SecretsManager::Secret"
    }
    values: dict[str, str] = {}
    for _round in range(len(pending) + 1):
        progressed = False
        for logical_id, props in list(pending.items()):
            writer = _written_by_custom_resource(template, logical_id)
            if writer is not None:
                if writer not in CUSTOM_RESOURCE_WRITERS:
                    raise TemplateError(f"{logical_id} is written by {writer}, which has no local writer")
                values[logical_id] = CUSTOM_RESOURCE_WRITERS[writer]()
            elif "GenerateSecretString" in props:
                values[logical_id] = _generated(props["GenerateSecretString"], token)
            elif "SecretString" in props:
                text = str(resolver.resolve(props["SecretString"]))
                unresolved = False

                def dynamic(match: re.Match[str]) -> str:
                    nonlocal unresolved
                    found = _dynamic_value(match.group("ref"), values, resolver)
                    if found is None:
                        unresolved = True
                        return match.group(0)
                    return found

                text = _DYNAMIC_REF.sub(dynamic, text)
                if unresolved:
                    continue
                values[logical_id] = _localize(text, backends)
            else:
                raise TemplateError(f"{logical_id}: neither SecretString nor GenerateSecretString")
            del pending[logical_id]
            progressed = True
        if not pending:
            return values
        if not progressed:
            break
    raise TemplateError(f"secrets with unresolvable dynamic references: {sorted(pending)}")


def resolve_secret(ref: SecretRef, values: Mapping[str, str]) -> str:
    """The value ECS injects for a container secret (whole string, or one JSON key)."""
    if ref.secret_id not in values:
        raise TemplateError(f"{ref.name}: no secret {ref.secret_id!r} in the template")
    value = values[ref.secret_id]
    if ref.json_key is None:
        return value
    try:
        document = json.loads(value)
    except json.JSONDecodeError:
        raise TemplateError(
            f"{ref.name}: {ref.secret_id} is not JSON, so it has no key {ref.json_key!r}"
        ) from None
    if ref.json_key not in document:
        raise TemplateError(f"{ref.name}: {ref.secret_id} has no JSON key {ref.json_key!r}")
    return str(document[ref.json_key])
