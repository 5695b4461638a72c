"""`restic forget` and `restic prune` in one pass, under restic's exclusive lock.

The order is the one that keeps the repository valid whenever the process stops (every step is a file
written or removed, and `restic check` accepts the repository between any two of them):

1. the forgotten snapshot files are removed (what they alone referenced becomes unreferenced data);
2. the blobs the remaining snapshots use are found by walking their trees; a used blob that no index
   names stops the prune before anything else changes (the repository is damaged: nothing is removed);
3. the used blobs of packs that go (wholly unused, or partly used with more unused bytes than
   `repack_over`) are copied, still sealed, into new packs, which are stored;
4. one new index naming every kept and new pack is stored, then the old index files are removed;
5. last, the packs nothing indexes any more are removed (also those an interrupted backup left).

Until step 4 the old index still names every old pack; after it, unreferenced packs are only
"additional files" to `restic check`, which the next prune removes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import zstandard

from kubectl_dr.repo.restic import forget, index, nodes, packs
from kubectl_dr.repo.restic.backend import DATA, INDEX, SNAPSHOTS
from kubectl_dr.repo.restic.locks import Lock
from kubectl_dr.repo.restic.nodes import ResticFormatError
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.retention import Policy
from kubectl_dr.units import count

# A partly used pack is rewritten when more than this share of its bytes is unused: below it the space
# is not worth the copy (restic's own default, --max-unused 5 %, is for the whole repository).
REPACK_OVER = 0.2
ZSTD_LEVEL = 3  # restic's "auto" compression
LOCK_WAIT = 0.0  # a prune does not queue behind a backup: it says who holds the repository
PACK_SIZE = packs.TARGET_PACK_SIZE  # restic's default pack size (--pack-size), which its prune measures against


@dataclass
class PruneResult:
    decisions: list[forget.Decision]
    dry_run: bool
    packs_removed: int = 0
    packs_repacked: int = 0
    blobs_repacked: int = 0  # every blob of the repacked packs, used or not: restic prune's "to repack"
    bytes_repacked: int = 0  # their packs' sizes
    packs_written: int = 0
    bytes_freed: int = 0
    bytes_kept: int = 0
    unused_kept: int = 0  # unused bytes left in partly used packs under the threshold
    indexes_replaced: int = 0
    max_repack_reached: bool = False  # --max-repack-size kept a pack that would otherwise have been repacked
    notes: list[str] = field(default_factory=list)

    @property
    def forgotten(self) -> list[forget.Decision]:
        return [d for d in self.decisions if not d.keep]


def used_blobs(repo: Repository, snapshots: list[str]) -> set[str]:
    """Every tree and data blob the given snapshot trees reach (each tree read once, checked)."""
    used: set[str] = set()
    pending = list(snapshots)
    while pending:
        tree_id = pending.pop()
        if tree_id in used:
            continue
        used.add(tree_id)
        for node in repo.load_tree(tree_id):
            if node.type == nodes.DIR and node.subtree:
                pending.append(node.subtree)
            used.update(node.content)
    return used


def parse_size(text: str, flag: str) -> int:
    """A size as restic's ParseBytes reads it: digits with an optional b/B, k/K, m/M, g/G or t/T suffix (powers
    of 1024)."""
    value = text.strip()
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    factor = units.get(value[-1:].lower(), 1) if value else 1
    digits = value[:-1] if value[-1:].lower() in units else value
    if not digits.isdigit():
        raise ValueError(f"{flag} {text!r}: give a size as restic does: 500M, 2G, 1T, or a number of bytes")
    return int(digits) * factor


def parse_max_unused(text: str) -> Callable[[int], int]:
    """restic's --max-unused: `unlimited`, a percentage below 100 (of the repository's size after the prune:
    p/(100-p) of the used bytes, as restic computes it) or a number of bytes (k/K, m/M, g/G, t/T suffixes:
    powers of 1024, as restic's ParseBytes)."""
    value = text.strip()
    if value == "unlimited":
        return lambda _used: 1 << 63
    if value.endswith("%"):
        try:
            p = float(value[:-1])
        except ValueError:
            raise ValueError(f"--max-unused {text!r}: not a percentage (e.g. 5%)") from None
        if not 0 <= p < 100:
            raise ValueError(f"--max-unused {text!r}: the percentage must be at least 0 and below 100")
        return lambda used: int(p / (100 - p) * used)
    try:
        limit = parse_size(value, "--max-unused")
    except ValueError:
        raise ValueError(f"--max-unused {text!r}: give a percentage (5%), a size (100M) or unlimited, as restic"
                         ) from None
    return lambda _used: limit


@dataclass(frozen=True)
class RepackOptions:
    """restic 0.18 prune's flags that choose which packs are rewritten, with restic's meanings.

    max_unused: --max-unused (None: restic's default, 5 %). max_repack_bytes: --max-repack-size, the packs
    repacked stop before their total size would reach it. repack_uncompressed: packs holding a blob stored
    uncompressed are rewritten with every blob compressed. repack_small: packs under 80 % of the pack size
    (16 MiB) are small (default: under 1/25 of it); small_pack_bytes (--repack-smaller-than) sets that size;
    ten or more small packs are merged. cacheable_only: only tree (and mixed) packs are rewritten, data packs
    stay unless nothing in them is used.
    """

    max_unused: Callable[[int], int] | None = None
    max_repack_bytes: int | None = None
    repack_uncompressed: bool = False
    repack_small: bool = False
    small_pack_bytes: int | None = None
    cacheable_only: bool = False

    def target_pack_size(self) -> int:
        # restic 0.18's decidePackAction: only very small packs count as small unless asked otherwise.
        if self.small_pack_bytes:
            return self.small_pack_bytes
        if self.repack_small:
            return PACK_SIZE // 5 * 4
        return PACK_SIZE // 25


def _keep_over_share(present: dict[str, list[packs.BlobEntry]], used: set[str], repack_over: float) -> set[str]:
    """Without --max-unused: a pack is kept when wholly used, or partly used with at most `repack_over` of
    its bytes unused."""
    kept = set()
    for pack, entries in present.items():
        total = sum(e.length for e in entries)
        unused = sum(e.length for e in entries if e.id not in used)
        if unused == 0 or (unused < total and unused <= repack_over * total):
            kept.add(pack)
    return kept


def decide_packs(present: dict[str, list[packs.BlobEntry]], sizes: dict[str, int], used: set[str],
                 opts: RepackOptions, version: int = 2) -> tuple[set[str], set[str], bool]:
    """restic 0.18 prune's choice (internal/repository/prune.go, decidePackAction), so that a `restic prune
    --dry-run` with the same flags finds nothing left to do: (packs kept, packs whose blobs must be stored
    compressed when repacked, whether --max-repack-size kept a pack back). Packs nothing uses go; data packs
    stay with --repack-cacheable-only; tree packs with an uncompressed blob (and, with --repack-uncompressed,
    any such pack) are always rewritten;
    partly used packs (tree packs and small ones first, then by their share of unused bytes) are repacked
    until the unused bytes left are under --max-unused; ten or more small packs are merged; nothing is
    repacked once --max-repack-size would be reached. A blob in several packs counts as used in the first
    only."""
    max_unused = opts.max_unused or parse_max_unused("5%")
    max_repack = opts.max_repack_bytes if opts.max_repack_bytes is not None else 1 << 63
    counted: set[str] = set()
    info: dict[str, tuple[int, int, str]] = {}  # pack -> (used bytes and header, unused bytes, type or "mixed")
    must_compress: set[str] = set()
    nothing_used: list[str] = []
    total_used = total_unused = 0
    for pack, entries in present.items():
        used_len = unused_len = 0
        for e in entries:
            if e.id in used and e.id not in counted:
                counted.add(e.id)
                used_len += e.length
            else:
                unused_len += e.length
        types = {e.type for e in entries}
        header = sizes[pack] - sum(e.length for e in entries)
        blob_type = types.pop() if len(types) == 1 else "mixed"
        info[pack] = (used_len + header, unused_len, blob_type)
        uncompressed = any(not e.uncompressed_length for e in entries)
        if version >= 2 and uncompressed and (blob_type == packs.TREE_BLOB or opts.repack_uncompressed):
            must_compress.add(pack)
        if not used_len:
            nothing_used.append(pack)
        total_used += used_len
        total_unused += unused_len
    target = opts.target_pack_size()
    kept: set[str] = set()
    candidates: list[str] = []
    small: list[str] = []
    removed_unused = sum(info[pack][1] for pack in nothing_used)
    for pack, (_used, unused, blob_type) in info.items():
        if pack in nothing_used:
            continue
        if opts.cacheable_only and blob_type == packs.DATA_BLOB:
            kept.add(pack)
        elif unused == 0 and blob_type != "mixed" and pack not in must_compress:
            if sizes[pack] < target:
                small.append(pack)
            else:
                kept.add(pack)
        else:
            candidates.append(pack)
    if len(small) < 10:  # too few to be worth the copy (restic's rule; it also stops endless repacking)
        kept.update(small)
    else:
        candidates.extend(small)

    def order(pack: str) -> tuple[bool, bool, float]:
        used_size, unused, blob_type = info[pack]
        return (blob_type == packs.DATA_BLOB, used_size + unused >= target, -unused / max(1, used_size))

    limit = max_unused(total_used)
    repacked_unused = repacked = 0
    reached = False
    for pack in sorted(candidates, key=order):
        used_size, unused, blob_type = info[pack]
        remaining = total_unused - removed_unused - repacked_unused
        if repacked + used_size + unused >= max_repack:
            kept.add(pack)
            reached = True
        elif blob_type != packs.DATA_BLOB or pack in must_compress:
            repacked_unused += unused
            repacked += used_size + unused
        elif remaining < limit and used_size + unused >= target:
            kept.add(pack)
        else:
            repacked_unused += unused
            repacked += used_size + unused
    return kept, must_compress - kept, reached


def prune(repo: Repository, policy: Policy, *, dry_run: bool, repack_over: float = REPACK_OVER,
          max_unused: Callable[[int], int] | None = None, repack: RepackOptions | None = None,
          say: Callable[[str], None] = lambda _: None) -> PruneResult:
    """Forget, then prune. Without `repack` or `max_unused`, a partly used pack is rewritten when more than
    `repack_over` of it is unused; with either, packs are chosen as restic 0.18's prune chooses them."""
    if repack is None and max_unused is not None:
        repack = RepackOptions(max_unused=max_unused)
    if repack is not None and repack.small_pack_bytes is not None and repack.small_pack_bytes > PACK_SIZE:
        raise ValueError(f"--repack-smaller-than exceeds the pack size ({PACK_SIZE} bytes), as restic refuses")
    with Lock(repo, exclusive=True, wait=LOCK_WAIT):
        decisions = forget.apply(repo.snapshots(), policy)
        result = PruneResult(decisions, dry_run)
        kept = [d.snapshot for d in decisions if d.keep]
        used = used_blobs(repo, [s.tree for s in kept])

        index_files = {name: index.decode(repo.load_unpacked(INDEX, name)) for name, _ in repo.backend.list(INDEX)}
        in_pack: dict[str, list[packs.BlobEntry]] = {}
        for entries_of in index_files.values():
            for pack, entries in entries_of:
                in_pack.setdefault(pack, entries)
        on_disk = dict(repo.backend.list(DATA))
        indexed = {b.id for entries in in_pack.values() for b in entries}
        missing = used - indexed
        if missing:
            raise ResticFormatError(
                f"{len(missing)} blob(s) the kept snapshots use are in no index (first {sorted(missing)[0][:8]}…): "
                "the repository is damaged; nothing was removed",
                hint="Run `restic check` and `restic repair index`, then prune again.")

        present = {pack: entries for pack, entries in in_pack.items() if pack in on_disk}
        # A pack named by an index but gone is dropped by the new index (restic repair index does too).
        compress: set[str] = set()
        reached = False
        if repack is None:
            kept_ids = _keep_over_share(present, used, repack_over)
        else:
            kept_ids, compress, reached = decide_packs(present, on_disk, used, repack, repo.config.version)
        keep_packs = {pack: present[pack] for pack in kept_ids}
        result.unused_kept = sum(e.length for entries in keep_packs.values() for e in entries if e.id not in used)
        have = {b.id for entries in keep_packs.values() for b in entries}
        to_copy: dict[str, tuple[str, packs.BlobEntry]] = {}
        for pack, entries in in_pack.items():
            if pack in keep_packs or pack not in on_disk:
                continue
            for e in entries:
                if e.id in used and e.id not in have and e.id not in to_copy:
                    to_copy[e.id] = (pack, e)
        missing = used - have - set(to_copy)
        if missing:
            raise ResticFormatError(
                f"{len(missing)} blob(s) the kept snapshots use are in no pack file (first {sorted(missing)[0][:8]}…):"
                " the repository is damaged; nothing was removed",
                hint="Run `restic check` and `restic repair packs`/`restic repair snapshots`.")
        removed_packs = [p for p in on_disk if p not in keep_packs]
        repacked = {p for p, _ in to_copy.values()}
        result.packs_repacked = len(repacked)
        result.blobs_repacked = sum(len(in_pack[p]) for p in repacked)
        result.bytes_repacked = sum(on_disk[p] for p in repacked)
        result.packs_removed = len(removed_packs)
        result.bytes_freed = sum(on_disk[p] for p in removed_packs)
        result.bytes_kept = sum(on_disk[p] for p in keep_packs)
        result.indexes_replaced = len(index_files)
        result.max_repack_reached = reached
        if dry_run:
            return result

        for d in result.forgotten:
            repo.backend.remove(SNAPSHOTS, d.snapshot.id)
        say(f"forgot {count(len(result.forgotten), 'snapshot')}")

        new_packs: list[tuple[str, list[packs.BlobEntry]]] = []
        writers: dict[str, packs.PackWriter] = {}

        def store(blob_type: str) -> None:
            writer = writers.pop(blob_type, None)
            if writer is not None and writer.entries:
                pack_id, data = writer.finish()
                repo.backend.save(DATA, pack_id, data)
                new_packs.append((pack_id, writer.entries))
                result.bytes_kept += len(data)

        # Copied sealed, pack by pack in offset order: each blob is encrypted on its own, so it moves as is;
        # one stored uncompressed in a pack that must be compressed is compressed (as restic stores every
        # blob of a version 2 repository, even when zstd makes it no smaller), checked against its ID first.
        for blob_id, (pack, e) in sorted(to_copy.items(), key=lambda kv: (kv[1][0], kv[1][1].offset)):
            stored = repo.backend.load(DATA, pack, e.offset, e.length)
            plain = repo.key.open(stored)  # the MAC checked before the copy is trusted
            sealed: bytes | bytearray = stored
            ulen = e.uncompressed_length
            if pack in compress and not ulen:
                if hashlib.sha256(plain).hexdigest() != blob_id:
                    raise ResticFormatError(f"blob {blob_id[:8]}… in pack {pack[:8]}… does not match its ID "
                                            "(damaged); nothing was removed",
                                            hint="Run `restic check --read-data` and `restic repair packs`.")
                sealed, ulen = repo.key.seal(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(plain)), len(plain)
            writer = writers.setdefault(e.type, packs.PackWriter(repo.key))
            writer.add(blob_id, e.type, sealed, ulen)
            if writer.size >= packs.TARGET_PACK_SIZE:
                store(e.type)
        for blob_type in list(writers):
            store(blob_type)
        result.packs_written = len(new_packs)
        if not removed_packs and not new_packs and len(index_files) <= 1:
            return result  # nothing unreferenced: the index stays as it is

        repo.save_unpacked(INDEX, index.encode([*keep_packs.items(), *new_packs]))
        for name in index_files:
            repo.backend.remove(INDEX, name)
        for pack in removed_packs:
            repo.backend.remove(DATA, pack)
        repo.reload_index()
        say(f"removed {count(len(removed_packs), 'pack')}, wrote {count(len(new_packs), 'new pack')}")
        return result

