"""Subject-exclusive 3-fold protocols of BP4D and DISFA (the folds most AU papers share, as
listed in the Ziqiao-Shang/AUNCE README; SEED_FACTS §5).

Fold ``k``'s ``test`` split is its own subjects; its ``train`` split is the other two folds'.
"""
from __future__ import annotations

from aue_edge.core.errors import DatasetError

BP4D_FOLDS: tuple[tuple[str, ...], ...] = (
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016",
     "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020",
     "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017",
     "M015", "F014"),
)
DISFA_FOLDS: tuple[tuple[str, ...], ...] = tuple(
    tuple(f"SN{n:03d}" for n in fold) for fold in (
        (2, 10, 1, 26, 27, 32, 30, 9, 16),
        (13, 18, 11, 28, 12, 6, 31, 21, 24),
        (3, 29, 23, 25, 8, 5, 7, 17, 4),
    ))
SPLITS = ("train", "test", "all")


def fold_subjects(folds: tuple[tuple[str, ...], ...], fold: int, split: str
                  ) -> tuple[str, ...]:
    """Subjects of ``split`` for ``fold`` (1-based): test = that fold, train = the others,
    all = every subject."""
    if fold not in range(1, len(folds) + 1):
        raise DatasetError(f"fold {fold!r} unknown; choose 1..{len(folds)}")
    if split not in SPLITS:
        raise DatasetError(f"split {split!r} unknown; choose one of {SPLITS}")
    if split == "test":
        return folds[fold - 1]
    return tuple(s for k, f in enumerate(folds, start=1)
                 for s in f if split == "all" or k != fold)

#: CK+ (development part in ``../shared/data/ckplus``, 79 subjects): subject-exclusive folds made
#: once by sorting the subject ids and dealing them round-robin (fold k takes subjects k, k+3,
#: k+6, ... of the sorted list). That gives 71 / 70 / 75 sequences per fold and every emotion in
#: each fold; the rarest AUs (AU10, AU26) have only 1-6 positive sequences in a fold, which is
#: why AU metrics are pooled over the three test folds. Fixed here so numbers stay comparable.
CKPLUS_FOLDS: tuple[tuple[str, ...], ...] = (
    ("S005", "S022", "S034", "S044", "S052", "S056", "S061", "S065", "S070", "S074", "S079",
     "S083", "S088", "S092", "S097", "S101", "S108", "S112", "S117", "S125", "S130", "S134",
     "S139", "S151", "S158", "S503", "S999"),
    ("S010", "S028", "S035", "S046", "S053", "S058", "S062", "S067", "S071", "S076", "S080",
     "S085", "S089", "S094", "S098", "S105", "S109", "S114", "S119", "S127", "S131", "S136",
     "S147", "S155", "S160", "S505"),
    ("S014", "S029", "S042", "S050", "S055", "S059", "S064", "S068", "S073", "S077", "S082",
     "S086", "S091", "S095", "S100", "S106", "S111", "S115", "S124", "S128", "S133", "S137",
     "S149", "S156", "S502", "S506"),
)
