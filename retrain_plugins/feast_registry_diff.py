"""Whether a repo's Feast registry holds what the repo's code defines (Feast's own ``plan`` diff).

The cheap part, where the registry lives and the definitions digest, is
:mod:`retrain_plugins.feast_registry`; this module imports Feast, and runs only when the digest
or the registry file changed since the last check (see that module's docstring).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from pathlib import Path

from retrain_plugins.errors import SpecError
from retrain_plugins.feast_import import import_feast
from retrain_plugins.feast_registry import (
    DefinitionsDigest, RegistryLocation, RegistryNotApplied, definition_files, definitions_digest, read_record,
    registry_location, registry_stamp, write_record,
)

# --- the repo's objects and the registry's -------------------------------------------------------


def load_repo_objects(feature_repo: Path) -> list:
    """Execute each definition file under a unique module name; the Feast objects they define.

    Unlike Feast's own ``parse_repo`` this never imports the repo's modules by name (a second
    repo, or an edited file, in a long-lived process would get the first module from
    ``sys.modules``) and never changes the working directory.
    """
    import_feast()
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView, Project
    from feast.data_source import DataSource
    from feast.labeling.label_view import LabelView
    from feast.permissions.permission import Permission

    kinds = (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService, LabelView, Permission, Project)
    objects: list = []
    for path in definition_files(feature_repo):
        if path.name == "__init__.py":  # Feast skips them too
            continue
        name = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(f"_feast_repo_{name}_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        for value in vars(module).values():
            if isinstance(value, kinds) and not any(value is o for o in objects):
                objects.append(value)
    return objects


def _repo_contents(objects: list, store):
    """``objects`` sorted into Feast's ``RepoContents`` as ``feast.repo_operations.parse_repo`` does."""
    from feast import BatchFeatureView, Entity, FeatureService, FeatureView, OnDemandFeatureView, Project, PushSource
    from feast.data_source import DataSource
    from feast.labeling.label_view import LabelView
    from feast.permissions.permission import Permission
    from feast.repo_contents import RepoContents
    from feast.stream_feature_view import StreamFeatureView

    res = RepoContents(
        projects=[], data_sources=[], feature_views=[], on_demand_feature_views=[], stream_feature_views=[],
        label_views=[], entities=[], feature_services=[], permissions=[],
    )  # fmt: skip

    def add(listing: list, obj) -> None:
        if obj is not None and not any(obj is o for o in listing):
            listing.append(obj)

    for obj in objects:
        if isinstance(obj, DataSource):
            add(res.data_sources, obj)
            add(res.data_sources, getattr(obj, "batch_source", None))  # push / stream sources
        elif isinstance(obj, StreamFeatureView):
            add(res.stream_feature_views, obj)
            add(res.data_sources, obj.batch_source)
            add(res.data_sources, obj.stream_source)
        elif isinstance(obj, (FeatureView, BatchFeatureView)):
            add(res.feature_views, obj)
            add(res.data_sources, obj.batch_source)
            add(res.data_sources, obj.stream_source)
        elif isinstance(obj, Entity):
            add(res.entities, obj)
        elif isinstance(obj, FeatureService):
            add(res.feature_services, obj)
        elif isinstance(obj, OnDemandFeatureView):
            add(res.on_demand_feature_views, obj)
        elif isinstance(obj, LabelView):
            add(res.label_views, obj)
            add(res.data_sources, obj.source)
            if isinstance(obj.source, PushSource):
                add(res.data_sources, obj.source.batch_source)
        elif isinstance(obj, Permission):
            add(res.permissions, obj)
        elif isinstance(obj, Project):
            add(res.projects, obj)
    if not res.projects:  # as feast apply does: the project named in feature_store.yaml
        description = getattr(store.config, "project_description", None) or ""
        res.projects.append(Project(name=store.project, description=description))
    return res


def registry_differences(feature_repo: Path) -> list[str] | None:
    """What differs between the registry and the repo's code (imports Feast; ~0.1 s once loaded).

    Returns ``None`` when the registry holds no project of the repo (never applied), else one
    line per object the code defines that is missing from the registry (``created ...``) or
    differs from it (``updated ...``, with the properties). Objects only in the registry are not
    differences: the library's in-process apply adds and updates without deleting. Uses
    ``FeatureStore.plan`` (Feast's own validation, inference and diff); the working directory is
    the repo meanwhile, as for ``feast plan``, so relative source paths infer the same way.
    """
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.infra.registry.registry import FeastObjectType

    from retrain_plugins.feast_store import _CWD_LOCK, feature_store, quiet_feast

    repo = Path(feature_repo).resolve()
    try:
        objects = load_repo_objects(repo)
    except Exception as exc:  # the user's code: any error it raises
        raise SpecError(f"the definitions in {repo} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    store = feature_store(str(repo))
    with _CWD_LOCK, quiet_feast():
        before = os.getcwd()
        os.chdir(repo)
        try:
            diff, _, _ = store.plan(_repo_contents(objects, store))
        except Exception as exc:
            raise SpecError(f"Feast cannot plan the definitions in {repo}: {type(exc).__name__}: {exc}") from exc
        finally:
            os.chdir(before)
    out = []
    for d in diff.feast_object_diffs:
        if d.name == DUMMY_ENTITY_NAME or d.transition_type in (TransitionType.UNCHANGED, TransitionType.DELETE):
            continue
        if d.feast_object_type == FeastObjectType.PROJECT and d.transition_type == TransitionType.CREATE:
            return None
        kind = d.feast_object_type.value
        if d.transition_type == TransitionType.CREATE:
            out.append(f"{kind} {d.name!r} is not in the registry")
            continue
        # Feast's diff compares a view's embedded sources with their meta (created / updated
        # times): once a view has been materialized (its equality then fails) every view "differs
        # (batch_source)". Only properties that differ without those times count.
        props = [p.property_name for p in d.feast_object_property_diffs if _comparable(p.val_existing) != _comparable(p.val_declared)]
        if props:
            out.append(f"{kind} {d.name!r} differs ({', '.join(props)})")
    return sorted(out)


def _comparable(value):
    """A protobuf property value without data-source ``meta`` (times), in a comparable form."""
    from google.protobuf.message import Message

    if isinstance(value, Message):
        copy = type(value)()
        copy.CopyFrom(value)
        _drop_source_meta(copy)
        return copy.SerializeToString(deterministic=True)
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return value
    if hasattr(value, "items"):  # a protobuf map
        return sorted((k, _comparable(v)) for k, v in value.items())
    return [_comparable(v) for v in value]  # a repeated field


def _drop_source_meta(message) -> None:
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.name == "meta" and field.message_type.full_name == "feast.core.DataSource.SourceMeta":
            message.ClearField("meta")
        elif field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    _drop_source_meta(item)
        elif field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED:
            for item in value:
                _drop_source_meta(item)
        else:
            _drop_source_meta(value)


@dataclasses.dataclass(frozen=True)
class RegistryCheck:
    """A registry found to hold a repo's definitions: their digest, and the registry's stamp then."""

    location: RegistryLocation
    digest: DefinitionsDigest
    stamp: str | None

    @property
    def token(self) -> str:
        """What a cache of anything read from the registry can be keyed by."""
        return f"{self.location.key}:{self.digest.digest}:{self.stamp or '-'}"


def current_state(feature_repo: Path) -> RegistryCheck:
    """The definitions digest and registry stamp now, unchecked (stats only, no Feast).

    Raises:
        RegistryNotApplied: The registry is a local file that does not exist.
    """
    repo = Path(feature_repo).resolve()
    location = registry_location(repo)
    try:
        stamp = registry_stamp(location)
    except FileNotFoundError:
        raise RegistryNotApplied(
            f"Feast registry {location.display} does not exist: run `feast -c {repo} apply` (or `retrain apply`) first"
        ) from None
    return RegistryCheck(location, definitions_digest(repo), stamp)


def check_registry_current(feature_repo: Path) -> RegistryCheck:
    """Raise ``SpecError`` unless the registry holds the repo's definitions.

    Cheap when the record beside the registry names the same digest and registry stamp (stats
    and a small JSON read); otherwise compares by content (:func:`registry_differences`) and
    records the result when they agree.

    Raises:
        RegistryNotApplied: No registry file, or no project of the repo in the registry.
        SpecError: The registry differs from the code: names the files changed since the last
            apply (when recorded) and the objects that differ.
    """
    repo = Path(feature_repo).resolve()
    state = current_state(repo)
    location, digest = state.location, state.digest
    record = read_record(location)
    if record is not None and record.get("digest") == digest.digest and record.get("registry_stamp") == state.stamp:
        return state
    differences = registry_differences(repo)
    if differences is None:
        raise RegistryNotApplied(
            f"Feast registry {location.display} holds no definitions of {repo}: "
            f"run `feast -c {repo} apply` (or `retrain apply`) first"
        )
    if differences:
        raise SpecError(_out_of_date(location, repo, digest, record, differences))
    write_record(location, digest, "content", state.stamp)
    return state


def _out_of_date(location: RegistryLocation, repo: Path, digest: DefinitionsDigest, record, differences) -> str:
    parts = []
    if record is not None:
        old = record.get("files") or {}
        changed = sorted(n for n in set(old) | set(digest.files) if old.get(n) != digest.files.get(n))
        if changed:
            parts.append(f"{changed} changed after the last apply")
        if record.get("repo") not in (None, digest.repo):
            parts.append(f"it was applied from {record['repo']}")
    parts.append("the registry differs from the repo's definitions: " + "; ".join(differences))
    return f"Feast registry {location.display} is out of date: {', '.join(parts)}; run `feast -c {repo} apply` (or `retrain apply`)"
