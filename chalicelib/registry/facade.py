"""The registry's public face: every model operation on behalf of a caller.

The HTTP routes and other domains come here, never to the registry service, its repository or
its store. Each function checks the caller against the model it touches with the one rule of
:mod:`chalicelib.core.access` (owner, ``access_groups``, admin): a model the caller may not read
is answered exactly like a model that does not exist. A reference to another resource (a
version's background dataset version) is checked with the caller's rights when it is made.

:func:`as_system` serves work that acts without a caller (the experiment monitor, queued
explanation jobs, an experiment's conclusion) and follows references checked when they were made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib.core import access, references
from chalicelib.core.principal import Principal
from chalicelib.registry.errors import ModelNotFound
from chalicelib.registry.models import ModelVersion, RegisteredModel


def _registry() -> Any:
    from chalicelib.registry.service import get_model_registry

    return get_model_registry()


def _missing(model_id: str) -> Any:
    return lambda: ModelNotFound(f"model {model_id} does not exist")


# ---- models -------------------------------------------------------------------------------


def create_model(
    principal: Principal,
    name: str,
    description: str = "",
    access_groups: Sequence[str] | None = None,
) -> RegisteredModel:
    """Creates a model owned by the caller, visible to ``access_groups`` (default: the caller's
    groups)."""
    groups = access.initial_groups(principal, access_groups)
    return _registry().create_model(name, description, principal.principal, groups)


def list_models(principal: Principal) -> list[RegisteredModel]:
    """The models the caller may read."""
    return access.visible(principal, _registry().list_models())


def readable_model(principal: Principal, model_id: str) -> RegisteredModel:
    """The model if the caller may read it.

    Raises:
        ModelNotFound: Unknown or not readable (the same answer).
    """
    return access.require_read(principal, _registry().get_model(model_id), _missing(model_id))


def require_readable_model(principal: Principal, model_id: str) -> None:
    """Checks that the caller may read the model, as :func:`readable_model` does, reading only
    its owner and access groups (for a check whose answer does not need the model).

    Raises:
        ModelNotFound: Unknown or not readable (the same answer).
    """
    access.require_read(principal, _registry().get_model_access(model_id), _missing(model_id))


def writable_model(principal: Principal, model_id: str) -> RegisteredModel:
    """The model if the caller may change it.

    Raises:
        ModelNotFound: Unknown or not readable.
        Forbidden: Readable, but the caller lacks the writer role.
    """
    return access.require_write(principal, _registry().get_model(model_id), _missing(model_id))


def set_access_groups(
    principal: Principal, model_id: str, access_groups: Sequence[str]
) -> RegisteredModel:
    """Replaces who may see a model (needs write access to it)."""
    writable_model(principal, model_id)
    return _registry().set_access_groups(model_id, access_groups)


def create_upload(principal: Principal, model_id: str) -> tuple[str, str]:
    """A presigned PUT for a large artifact of a model the caller may change."""
    writable_model(principal, model_id)
    return _registry().create_upload(model_id)


# ---- versions -----------------------------------------------------------------------------


def register_version(
    principal: Principal,
    model_id: str,
    spec: Any,
    artifact: bytes | None = None,
    upload_key: str | None = None,
) -> ModelVersion:
    """Registers a version of a model the caller may change.

    A ``background_dataset_version_id`` must name a dataset version the caller may read; the
    reference pins that dataset's access (:mod:`chalicelib.core.references`): its groups cannot
    drop one of the model's while the version exists.

    Raises:
        ModelNotFound: The model is unknown or not readable.
        DatasetVersionNotFound: The background dataset version is unknown or not readable.
    """
    model = writable_model(principal, model_id)
    background = spec.background_dataset_version_id
    if background is None:
        return _registry().register_version(model_id, spec, artifact, upload_key)
    from chalicelib.dataversion import facade as datasets

    dataset = references.Ref("dataset", datasets.readable_version(principal, background).dataset_id)
    with references.referring([dataset], "model", model.access_groups, model_id):
        datasets.readable_version(principal, background)  # again, now that the pin holds
        return _registry().register_version(model_id, spec, artifact, upload_key)


def list_versions(principal: Principal, model_id: str) -> list[ModelVersion]:
    """Every version of a readable model."""
    readable_model(principal, model_id)
    return _registry().list_versions(model_id)


def readable_version(principal: Principal, model_id: str, version: int) -> ModelVersion:
    """One version of a readable model.

    Raises:
        ModelNotFound: The model is unknown or not readable.
        ModelVersionNotFound: No such version.
    """
    readable_model(principal, model_id)
    return _registry().get_version(model_id, version)


def set_stage(principal: Principal, model_id: str, version: int, stage: str) -> ModelVersion:
    """Moves a version of a model the caller may change to another stage."""
    writable_model(principal, model_id)
    return _registry().set_stage(model_id, version, stage)


def background_visible(principal: Principal, version: ModelVersion) -> bool:
    """Whether the caller may read the version's background dataset version (``True`` when it
    has none)."""
    if version.background_dataset_version_id is None:
        return True
    from chalicelib.core.errors import NotFound
    from chalicelib.dataversion import facade as datasets

    try:
        datasets.readable_version(principal, version.background_dataset_version_id)
    except NotFound:
        return False
    return True


# ---- without a caller ---------------------------------------------------------------------


def access_groups_as_system(model_id: str) -> list[str] | None:
    """A model's access groups (``None`` if it does not exist): for deciding whether a change
    of another resource's access would hide it from the model's readers."""
    from chalicelib.core.errors import NotFound

    try:
        return list(_registry().get_model(model_id).access_groups)
    except NotFound:
        return None


class SystemRegistry:
    """Registry reads and stage changes for work that acts without a caller.

    Used by other domains' engines after they checked the caller (an experiment's conclusion
    promotes its winner), and by scheduled or queued work following references that were checked
    when they were made.
    """

    def get_model(self, model_id: str) -> RegisteredModel:
        """A model (404 if unknown)."""
        return _registry().get_model(model_id)

    def get_version(self, model_id: str, version: int) -> ModelVersion:
        """A version (404 if unknown)."""
        return _registry().get_version(model_id, version)

    def set_stage(self, model_id: str, version: int, stage: str) -> ModelVersion:
        """Moves a version to a stage (``production`` archives the previous one)."""
        return _registry().set_stage(model_id, version, stage)

    def load_model(self, model_id: str, version: int, reserve: Any = None) -> Any:
        """The estimator of a version (skops, trusted types only); ``reserve`` holds memory for
        each step of the load (see ``ModelRegistry.load_model``)."""
        return _registry().load_model(model_id, version, reserve=reserve)

    def get_background_sample(self, model_id: str, version: int) -> list[list[Any]] | None:
        """The background rows stored with a version, or ``None``."""
        return _registry().get_background_sample(model_id, version)


def as_system() -> SystemRegistry:
    """The registry for work without a caller (see :class:`SystemRegistry`)."""
    return SystemRegistry()
