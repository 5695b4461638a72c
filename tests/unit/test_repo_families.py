"""An application backup and its claims' backups live and die together, in a local directory, on S3
(SeaweedFS) and on Azure Blob (Azurite): a claim's backup is never deleted or pruned alone while an
application backup names it, deleting an application backup takes its claims' backups, and a delete cut
short leaves the application backup marked as being deleted, which a rerun or a prune finishes.

The backups are written through the repository's own writer, as `namespace backup` writes them (each claim
a pvc backup, the application backup naming them in its manifest); the interruptions are the exact states
a killed delete leaves (the end-to-end test kills a real one)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kubectl_dr.repo import LocalRepository, Repository
from kubectl_dr.repo.errors import PartOfAppBackupError, RepoError
from tests.objectstores import Clock
from tests.unit.test_repo_objectstores import _store


@pytest.fixture(params=["local", "seaweedfs", "azure"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Repository:
    clock = Clock()
    if request.param == "local":
        return LocalRepository(tmp_path / "repo", clock=clock)
    return _store(request, request.param).repo(clock=clock)


def _tick(repo: Repository) -> None:
    clock = repo._clock
    assert isinstance(clock, Clock)
    clock.tick()


def pvc(repo: Repository, claim: str, data: bytes = b"data", namespace: str = "shop") -> str:
    _tick(repo)
    with repo.create("pvc", {"namespace": namespace, "pvc": claim}, f"app-{namespace}-{claim}") as writer:
        with writer.open_part("data.tar") as part:
            part.write(data)
        return writer.commit({"archive": {"entries": 1}}).id


def app(repo: Repository, claims: dict[str, str], namespace: str = "shop") -> str:
    """An application backup naming ``claims`` (claim name → its pvc backup ID), as `namespace backup` writes."""
    _tick(repo)
    details: dict[str, Any] = {"name": namespace, "kinds": {"ConfigMap": 1}, "objects": 1, "excluded": 0,
                               "claims": [{"namespace": namespace, "name": n, "backup": b, "size": 4, "entries": 1}
                                          for n, b in claims.items()]}
    with repo.create("app", {"namespaces": [namespace]}, namespace) as writer:
        with writer.open_part("objects.json") as part:
            part.write(json.dumps([{"kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace}}]).encode())
        return writer.commit(details).id


def family(repo: Repository) -> tuple[str, str, str]:
    db, cache = pvc(repo, "db", os.urandom(1000)), pvc(repo, "cache")
    return app(repo, {"db": db, "cache": cache}), db, cache


def ids(repo: Repository) -> set[str]:
    return {m.id for m in repo.list()}


def test_a_claims_backup_is_not_deleted_alone(repo: Repository) -> None:
    parent, db, cache = family(repo)
    with pytest.raises(PartOfAppBackupError) as refused:
        repo.delete(db)
    assert parent in refused.value.message and "unrestorable" in refused.value.message
    assert f"kubectl dr backups delete {parent}" in (refused.value.hint or "")
    assert ids(repo) == {parent, db, cache}


def test_deleting_an_app_backup_takes_its_claims_backups(repo: Repository) -> None:
    parent, db, cache = family(repo)
    alone = pvc(repo, "db")  # a `pvc backup` of the same claim: no application backup's, not taken
    plan = repo.deletion_plan(repo.get(parent))
    assert plan.ids == [db, cache, parent] and plan.missing == [] and plan.shared == {}
    repo.delete(parent)
    assert ids(repo) == {alone}
    assert repo.leftovers() == []


def test_an_interrupted_delete_is_marked_and_finished_by_a_rerun_or_a_prune(repo: Repository) -> None:
    first, db1, cache1 = family(repo)
    second, db2, cache2 = family(repo)
    for target in (first, second):
        backup = repo.get(target)
        plan = repo.deletion_plan(backup)
        # Cut after the mark and the first claim's backup: the app backup says it is being deleted.
        repo._mark_deleting(backup, [c.id for c in plan.claims])
        repo._remove(plan.claims[0])
        assert repo.deleting(repo.get(target))
    assert ids(repo) == {first, cache1, second, cache2} and not {db1, db2} & ids(repo)
    # Copied now, it would look whole in the target, where nothing finishes the delete: refused by name.
    with pytest.raises(RepoError, match=f"{first} \\(being deleted\\)"):
        repo.with_claims([repo.get(first)])
    # Its remaining claims' backups are no longer held by it: they may go alone now.
    assert [c.id for c in repo.deletion_plan(repo.get(first)).claims] == [cache1]
    repo.delete(first)  # the rerun
    assert ids(repo) == {second, cache2}
    # A prune finishes it whatever the rules (it is never restored again).
    result = repo.prune(keep_last=5)
    assert result.finishing == [second] and set(result.removed) == {second, cache2}
    assert result.follows == {cache2: second}
    assert ids(repo) == set() and not repo.leftovers()


def test_prune_keeps_or_removes_claims_backups_with_their_app_backups(repo: Repository) -> None:
    old, old_db, old_cache = family(repo)
    alone_old, alone_new = pvc(repo, "db"), pvc(repo, "db")
    new, new_db, new_cache = family(repo)
    dry = repo.prune(keep_last=1, dry_run=True)
    assert set(dry.removed) == {old, old_db, old_cache, alone_old}
    assert dry.follows == {old_db: old, old_cache: old}
    assert dry.reasons[new_db] == dry.reasons[new_cache] == [f"claim of app backup {new}"]
    # The standalone backups of the claim are their own series: the newest kept by the rule.
    assert dry.reasons[alone_new] == ["last"] and dry.reasons[new] == ["last"]
    assert ids(repo) == {old, old_db, old_cache, alone_old, alone_new, new, new_db, new_cache}

    result = repo.prune(keep_last=1)
    assert result.failed == [] and ids(repo) == {new, new_db, new_cache, alone_new}
    for backup_id in ids(repo):
        repo.verify(backup_id)
    # Only pvc backups in scope: the claims' backups stay with their app backup, whatever the rule.
    kept = repo.prune(keep_last=0, type="pvc", dry_run=True)
    assert kept.removed == [] and kept.reasons[new_db] == [f"claim of app backup {new}"]


def test_an_app_backup_with_a_claims_backup_missing_is_not_the_newest_verified(repo: Repository) -> None:
    old, _, _ = family(repo)
    new, db, _ = family(repo)
    repo._remove(repo.get(db))  # gone behind its back (an older kubectl-dr's delete)
    result = repo.prune(keep_last=0, type="app", dry_run=True)
    assert result.reasons.get(old) == ["newest verified"] and new in result.removed


def test_a_crafted_app_backup_cannot_take_another_backup(repo: Repository) -> None:
    other = pvc(repo, "orders", namespace="billing")
    crafted = app(repo, {"db": other})  # names billing/orders' backup as shop/db's
    plan = repo.deletion_plan(repo.get(crafted))
    assert plan.claims == [] and plan.missing == []
    repo.delete(other)  # not held: it is not that claim's backup
    repo.delete(crafted)
    assert ids(repo) == set()


def test_a_claims_backup_two_app_backups_name_stays_with_the_other(repo: Repository) -> None:
    db = pvc(repo, "db")
    one, two = app(repo, {"db": db}), app(repo, {"db": db})
    plan = repo.deletion_plan(repo.get(one))
    assert plan.claims == [] and plan.shared == {db: [two]}
    repo.delete(one)
    with pytest.raises(PartOfAppBackupError):
        repo.delete(db)
    repo.delete(two)
    assert ids(repo) == set()


def test_a_copy_takes_an_app_backups_claims_backups_first(repo: Repository) -> None:
    parent, db, cache = family(repo)
    alone = pvc(repo, "db")
    chosen = repo.with_claims([repo.get(alone), repo.get(parent), repo.get(db)])
    assert [b.id for b in chosen] == [alone, db, cache, parent]


def test_an_app_backup_whose_claims_backup_is_gone_is_not_copied(repo: Repository) -> None:
    app, db, cache = family(repo)
    repo._remove(repo.get(db))  # gone by hand, past every rule of ours
    with pytest.raises(RepoError, match=f"its claims' backups {db} are gone"):
        repo.with_claims([repo.get(app)])
    assert [b.id for b in repo.with_claims([repo.get(cache)])] == [cache]


def test_verifying_an_app_backup_verifies_its_claims_backups(repo: Repository) -> None:
    """An application backup is whole only with its claims' data: `backups verify APP` checks them too, and one
    gone makes it damaged (it once said ok, and only the restore found out)."""
    from kubectl_dr.repo.errors import BackupCorruptError

    whole, db, cache = family(repo)
    repo.verify(whole)
    for backup_id in (whole, db, cache):
        record = repo.verification(repo.get(backup_id))
        assert record is not None and record.ok, backup_id
    broken, gone, _ = family(repo)
    repo._remove(repo.get(gone))
    with pytest.raises(BackupCorruptError, match=f"no longer holds: {gone}"):
        repo.verify(broken)
    record = repo.verification(repo.get(broken))
    assert record is not None and not record.ok


def test_an_outcome_that_cannot_be_recorded_is_said(tmp_path: Path) -> None:
    """A read-only copy can be verified; that its outcome was not recorded is told, not printed as recorded."""
    from tests.objectstores import Clock

    repo = LocalRepository(tmp_path / "repo", clock=Clock())
    backup_id = pvc(repo, "db")
    (repo.path / backup_id / "verification.json").mkdir()  # where the record goes: not writable as a file
    told: list[str] = []
    repo.verify(backup_id, unrecorded=told.append)
    assert len(told) == 1 and told[0]
