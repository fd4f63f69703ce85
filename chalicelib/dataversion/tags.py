"""Tags: named refs to versions (``production``, ``golden-2026-11``) with their own history.

A tag points to one version of its dataset and can be moved; every move is kept (who, when, from
which version), so ``as_of`` answers where a tag pointed at any moment. A move is one conditional
transaction on where the tag pointed when it was read, retried when another move came first.
Wherever a route takes a version (a number, a version id), it takes a tag too.
"""

from __future__ import annotations

import re
from datetime import datetime

from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import ServiceUnavailable, ValidationError
from chalicelib.dataversion.errors import DatasetVersionNotFound, VersionNumberTaken
from chalicelib.dataversion.models import DatasetVersion, TagMove
from chalicelib.dataversion.repository import TagRepository

MAX_MOVE_ATTEMPTS = 20
# A tag must not read as a version number or a version id, which refs also accept.
_TAG = re.compile(r"^(?!dv-)(?!\d+$)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_tag_name(tag: str) -> None:
    """Refuses names that are not tags.

    Raises:
        ValidationError: Not 1-128 characters of letters, digits, ``.``, ``_`` and ``-``
            starting with a letter or digit, or a name that reads as a version number or id.
    """
    if not _TAG.match(tag):
        raise ValidationError(
            f"'{tag[:40]}' is not a tag name: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, not all digits and not starting with 'dv-'"
        )


class TagBook:
    """Moves and resolves tags.

    Args:
        repository: Tag storage.
        clock: Time source.
    """

    def __init__(self, repository: TagRepository | None = None, clock: Clock | None = None) -> None:
        self.repository = repository or TagRepository()
        self.clock = clock or SystemClock()

    def move(self, version: DatasetVersion, tag: str, moved_by: str) -> TagMove:
        """Points ``tag`` at ``version`` (creating the tag), recording the move.

        Moving a tag to the version it already points to records nothing and returns its last
        move.

        Raises:
            ValidationError: Not a tag name.
        """
        check_tag_name(tag)
        for _ in range(MAX_MOVE_ATTEMPTS):
            current = self.repository.current(version.dataset_id, tag)
            if current is not None and current.version_id == version.version_id:
                return current
            move = TagMove(
                dataset_id=version.dataset_id,
                tag=tag,
                version_id=version.version_id,
                version_number=version.version_number,
                previous_version_id=None if current is None else current.version_id,
                moved_by=moved_by,
                moved_at=self.clock.now(),
            )
            try:
                self.repository.move(move)
            except VersionNumberTaken:
                continue
            return move
        raise ServiceUnavailable(f"tag '{tag}' keeps moving; try again")

    def resolve(self, dataset_id: str, tag: str, as_of: datetime | None = None) -> TagMove:
        """Where ``tag`` points now, or pointed at ``as_of``.

        Raises:
            DatasetVersionNotFound: No such tag (or it did not exist yet at ``as_of``).
        """
        if as_of is None:
            found = self.repository.current(dataset_id, tag)
        else:
            earlier = [m for m in self.repository.history(dataset_id, tag) if m.moved_at <= as_of]
            found = earlier[-1] if earlier else None
        if found is None:
            when = "" if as_of is None else f" at {as_of.isoformat()}"
            raise DatasetVersionNotFound(f"dataset {dataset_id} has no tag '{tag}'{when}")
        return found

    def tags(self, dataset_id: str) -> list[TagMove]:
        """Where every tag of the dataset points."""
        return self.repository.list_current(dataset_id)

    def history(self, dataset_id: str, tag: str) -> list[TagMove]:
        """Every move of a tag, oldest first (404 for an unknown tag).

        Raises:
            DatasetVersionNotFound: No such tag.
        """
        moves = self.repository.history(dataset_id, tag)
        if not moves:
            raise DatasetVersionNotFound(f"dataset {dataset_id} has no tag '{tag}'")
        return moves
