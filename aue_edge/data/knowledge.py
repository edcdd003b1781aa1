"""FACS domain knowledge as plain data: AU lists, label sets, the AU-expression prior, AU pairs,
where each AU sits on the face, and the eight facial areas of the self-supervised AU paper.

Every model, trainer and data set reader reads these tables instead of repeating them. numpy only
(no torch), so calibration and tests can use it too.

Sources (see ``../shared/SEED_FACTS.md``):

- AUE-CRL: T. Pu, T. Chen, Y. Xie, H. Wu, L. Lin, "AU-Expression Knowledge Constrained
  Representation Learning for Facial Expression Recognition", ICRA 2021 (arXiv 2012.14587v2),
  and its code HCPLab-SYSU/AUE-CRL: the 17-AU list and its order, the expression order,
  the 7x17 prior table W (``InitTable``/``Mask_A/B/C`` in ``model.py``), the band values, the
  positive/negative AU pairs (``loss.py``) and the two 68-landmark crop centres per AU
  (``dataset.py`` ``get_au_loc``).
- Y. Chang, S. Wang, "Knowledge-Driven Self-Supervised Representation Learning for Facial
  Action Unit Recognition", CVPR 2022: the eight facial areas, the AU -> area table (Tab. 1),
  the symmetric areas and the evaluation groups. The areas' defining landmarks appear only in
  the paper's Fig. 1b; our definitions are assumptions, stated in :func:`area_boxes`.
- EMFACS prototypes (Ekman, Friesen & Hager, FACS Investigator's Guide, 2002, as tabulated in the
  Wikipedia FACS article and open_dbm's emotional-expressivity documentation).
- Barsoum et al., ICMI 2016 (FER+ label order); the FER2013 challenge (its label order).

Conventions: AUs are named ``"AU<n>"``; expressions by canonical lowercase names (``neutral``,
``happiness``, ``surprise``, ``sadness``, ``anger``, ``disgust``, ``fear``, ``contempt``);
landmark indices are 0-based iBUG 68-point indices; facial-area ids are 0-based in code (the
paper counts 1..8).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from aue_edge.core.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Action units
# ---------------------------------------------------------------------------------------------

#: AUE-CRL's 17 AUs in its order (numOfAU=17; AU14 is commented out in its code).
AUECRL_AUS: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU15", "AU16", "AU17",
    "AU20", "AU23", "AU24", "AU25", "AU26",
)
#: The 12 AUs annotated for occurrence in BP4D (FERA 2015 protocol).
BP4D_AUS: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24",
)
#: The 8 DISFA AUs used by the common protocol (positive iff intensity >= 2).
DISFA_AUS: tuple[str, ...] = ("AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU25", "AU26")

#: FACS names of every AU used anywhere in the package.
AU_DESCRIPTIONS: dict[str, str] = {
    "AU1": "inner brow raiser",
    "AU2": "outer brow raiser",
    "AU4": "brow lowerer",
    "AU5": "upper lid raiser",
    "AU6": "cheek raiser",
    "AU7": "lid tightener",
    "AU9": "nose wrinkler",
    "AU10": "upper lip raiser",
    "AU12": "lip corner puller",
    "AU14": "dimpler",
    "AU15": "lip corner depressor",
    "AU16": "lower lip depressor",
    "AU17": "chin raiser",
    "AU20": "lip stretcher",
    "AU23": "lip tightener",
    "AU24": "lip pressor",
    "AU25": "lips part",
    "AU26": "jaw drop",
}

# ---------------------------------------------------------------------------------------------
# Expression label sets (index = class id in that data set's files)
# ---------------------------------------------------------------------------------------------

EXPRESSIONS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)
#: RAF-DB basic; AUE-CRL's order (file labels 1..7 minus 1).
RAFDB_LABELS: tuple[str, ...] = (
    "surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral",
)
#: SFEW 2.0 as AUE-CRL trains it: the same 7 classes in the same order as RAF-DB.
SFEW_LABELS: tuple[str, ...] = RAFDB_LABELS
#: FER+ ``label.csv`` vote columns (the 8 emotions; unknown and NF are not classes).
FERPLUS_LABELS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)
#: FER2013 ``emotion`` column 0..6 (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral).
FER2013_LABELS: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral",
)
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "rafdb": RAFDB_LABELS,
    "sfew": SFEW_LABELS,
    "ferplus": FERPLUS_LABELS,
    "fer2013": FER2013_LABELS,
}


def label_mapping(src: Sequence[str], dst: Sequence[str]) -> np.ndarray:
    """For each label of ``src``, its index in ``dst`` (-1 where ``dst`` lacks it), int64.

    ``label_mapping(FERPLUS_LABELS, RAFDB_LABELS)[y]`` turns a FER+ class id into a RAF-DB one;
    contempt maps to -1 because RAF-DB has no contempt class.
    """
    for name, labels in (("src", src), ("dst", dst)):
        unknown = [x for x in labels if x not in EXPRESSIONS]
        if unknown:
            raise ConfigError(f"label_mapping: {name} holds {unknown}, which are not canonical "
                              f"expression names; expected names from {EXPRESSIONS}")
    position = {label: i for i, label in enumerate(dst)}
    return np.array([position.get(label, -1) for label in src], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Prior AU-expression relevance (AUE-CRL's W)
# ---------------------------------------------------------------------------------------------

#: Value range each entry of W is clamped to when it builds pseudo AU labels.
BAND_RANGES: dict[str, tuple[float, float]] = {
    "primary": (0.75, 1.0), "secondary": (0.5, 0.75), "other": (0.0, 0.25),
}
#: Initial value of W per band (AUE-CRL ``InitTable``).
BAND_INIT: dict[str, float] = {"primary": 1.0, "secondary": 0.5, "other": 0.1}
#: Band centres, the targets of W's regulariser (``loss.py``: |W - centre|).
BAND_CENTRES: dict[str, float] = {band: (lo + hi) / 2 for band, (lo, hi) in BAND_RANGES.items()}

#: Primary and secondary AUs per expression; every other AU is in the "other" band.
#: The seven basic rows are AUE-CRL's table exactly as its code has it. Its Sadness row has AU7
#: primary and AU4 secondary where EMFACS gives 1+4+15 (likely a slip in the release); we keep
#: the released table because published results were obtained with it.
#: Contempt is not in AUE-CRL. Its EMFACS prototype is R12A+R14A (unilateral, trace intensity).
#: AU14 is not among the 17 AUs, so only AU12 remains; we put it in the *secondary* band, not
#: primary, because the prototype asks for a one-sided trace-level AU12 that a bilateral AU12
#: detector scores weakly, and because a primary AU12 would make contempt's row a subset of
#: happiness's (6+12) apart from AU6. Neutral: all "other" (0.1), as in AUE-CRL.
PRIOR_RELEVANCE: dict[str, dict[str, tuple[str, ...]]] = {
    "surprise": {"primary": ("AU1", "AU2", "AU5", "AU25", "AU26"), "secondary": ("AU16",)},
    "fear": {"primary": ("AU1", "AU2", "AU4", "AU5", "AU7", "AU20"),
             "secondary": ("AU23", "AU25")},
    "disgust": {"primary": ("AU9", "AU10"), "secondary": ("AU17", "AU25")},
    "happiness": {"primary": ("AU6", "AU12"), "secondary": ("AU7", "AU25")},
    "sadness": {"primary": ("AU1", "AU7", "AU15"), "secondary": ("AU4", "AU6", "AU17")},
    "anger": {"primary": ("AU4", "AU5", "AU23", "AU24"), "secondary": ("AU7", "AU17")},
    "neutral": {"primary": (), "secondary": ()},
    "contempt": {"primary": (), "secondary": ("AU12",)},
}


#: The EMFACS alternative for sadness (1+4+15; SEED_FACTS 6): AU4 primary instead of AU7, AU7
#: in the "other" band. Measured on the CK+ development faces with the oracle read-out
#: ``onehot(true emotion) @ W`` (band centres): mean F1 0.690 vs 0.688, mean AUC 0.832 vs 0.829
#: (AU7 AUC 0.56 vs 0.50) - a difference within what 18 sadness sequences can resolve, so the
#: reference table stays the default (published AUE-CRL results were obtained with it) and
#: this one is the option ``prior_table="emfacs"``.
EMFACS_SADNESS: dict[str, tuple[str, ...]] = {"primary": ("AU1", "AU4", "AU15"),
                                              "secondary": ("AU6", "AU17")}
PRIOR_TABLES = ("reference", "emfacs")


def _check_names(kind: str, names: Sequence[str], known: Sequence[str]) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown {kind} {unknown}; expected names from {tuple(known)}")


def prior_matrix(labels: Sequence[str], aus: Sequence[str] = AUECRL_AUS,
                 table: str = "reference") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The prior W for ``labels`` x ``aus``: ``(init, band_low, band_high)``, float32 (E, A).

    ``init`` holds the band's initial value (1.0/0.5/0.1); ``band_low``/``band_high`` the range
    each entry is clamped to (see :func:`clamp_prior`). AUs absent from an expression's
    primary/secondary lists (including AUs outside AUE-CRL's 17, e.g. AU14) are "other".
    """
    if table not in PRIOR_TABLES:
        raise ConfigError(f"prior table {table!r} unknown; choose one of {PRIOR_TABLES}")
    relevance = dict(PRIOR_RELEVANCE)
    if table == "emfacs":
        relevance["sadness"] = EMFACS_SADNESS
    _check_names("expression", labels, tuple(PRIOR_RELEVANCE))
    _check_names("AU", aus, tuple(AU_DESCRIPTIONS))
    shape = (len(labels), len(aus))
    init = np.full(shape, BAND_INIT["other"], dtype=np.float32)
    low = np.full(shape, BAND_RANGES["other"][0], dtype=np.float32)
    high = np.full(shape, BAND_RANGES["other"][1], dtype=np.float32)
    for e, label in enumerate(labels):
        for band in ("primary", "secondary"):
            for au in relevance[label][band]:
                if au in aus:
                    a = aus.index(au)
                    init[e, a] = BAND_INIT[band]
                    low[e, a], high[e, a] = BAND_RANGES[band]
    return init, low, high


def clamp_prior(weights: np.ndarray, band_low: np.ndarray, band_high: np.ndarray) -> np.ndarray:
    """W clamped entry-wise to its bands, as AUE-CRL does before building pseudo AU labels.

    The pseudo AU target of a sample with expression ``e`` is row ``e`` of the result.
    """
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != np.shape(band_low) or weights.shape != np.shape(band_high):
        raise ConfigError(f"clamp_prior: weights {weights.shape} and bands "
                          f"{np.shape(band_low)}/{np.shape(band_high)} differ in shape; build "
                          f"the bands with prior_matrix() for the same labels and AUs")
    return np.clip(weights, band_low, band_high)


# ---------------------------------------------------------------------------------------------
# AU pairs (AUE-CRL loss.py) and EMFACS prototypes
# ---------------------------------------------------------------------------------------------

#: AU pairs that tend to co-occur (AUE-CRL's regulariser, from a co-occurrence analysis).
POSITIVE_AU_PAIRS: tuple[tuple[str, str], ...] = (
    ("AU1", "AU2"), ("AU4", "AU7"), ("AU4", "AU9"), ("AU7", "AU9"), ("AU6", "AU12"),
    ("AU9", "AU17"), ("AU15", "AU17"), ("AU15", "AU24"), ("AU17", "AU24"), ("AU23", "AU24"),
)
#: AU pairs that tend to exclude each other.
NEGATIVE_AU_PAIRS: tuple[tuple[str, str], ...] = (
    ("AU2", "AU6"), ("AU2", "AU7"), ("AU12", "AU15"), ("AU12", "AU17"),
)


def pair_indices(pairs: Sequence[tuple[str, str]], aus: Sequence[str] = AUECRL_AUS
                 ) -> np.ndarray:
    """``(P, 2)`` int64 indices into ``aus`` of each AU pair."""
    aus = tuple(aus)
    flat = [au for pair in pairs for au in pair]
    _check_names("AU in pair list", flat, aus)
    return np.array([[aus.index(a), aus.index(b)] for a, b in pairs],
                    dtype=np.int64).reshape(len(pairs), 2)


#: EMFACS prototypes in FACS notation: an optional side (L/R/U), the AU number and an optional
#: intensity letter A..E. ``EMFACS_PROTOTYPES`` holds the plain AU names parsed from these.
EMFACS_CODES: dict[str, str] = {
    "happiness": "6+12",
    "sadness": "1+4+15",
    "surprise": "1+2+5B+26",
    "fear": "1+2+4+5+7+20+26",
    "anger": "4+5+7+23",
    "disgust": "9+15+16",
    "contempt": "R12A+R14A",
}

_FACS_TERM = re.compile(r"^(?P<side>[LRU]?)(?P<au>\d{1,2})(?P<intensity>[A-E]?)$")


def parse_facs_code(code: str) -> tuple[str, ...]:
    """AU names of a FACS code such as ``"R12A+R14A"`` -> ``("AU12", "AU14")``."""
    names = []
    for term in code.split("+"):
        match = _FACS_TERM.match(term.strip())
        if match is None:
            raise ConfigError(f"FACS code {code!r}: term {term!r} is not of the form "
                              f"[L|R|U]<AU number>[A-E], e.g. 'R12A'")
        names.append(f"AU{int(match['au'])}")
    return tuple(names)


EMFACS_PROTOTYPES: dict[str, tuple[str, ...]] = {
    expr: parse_facs_code(code) for expr, code in EMFACS_CODES.items()
}

# ---------------------------------------------------------------------------------------------
# Where each AU sits: AUE-CRL's two crop centres per AU
# ---------------------------------------------------------------------------------------------

#: Two crop centres per AU; a spec is one landmark index or a tuple whose mean is taken.
#: From AUE-CRL ``get_au_loc`` (68-point branch). AU14 has none there (commented out).
AU_CROP_CENTRES: dict[str, tuple[int | tuple[int, ...], int | tuple[int, ...]]] = {
    "AU1": (21, 22),
    "AU2": (18, 25),
    "AU4": ((21, 22), (19, 24)),
    "AU5": ((37, 38), (43, 44)),
    "AU6": (41, 46),
    "AU7": (38, 43),
    "AU9": (31, 35),
    "AU10": (50, 52),
    "AU12": (48, 54),
    "AU15": (48, 54),
    "AU16": (58, 56),
    "AU17": (51, 57),
    "AU20": (48, 54),
    "AU23": (60, 62),
    "AU24": (61, 64),
    "AU25": (62, 66),
    "AU26": (51, 57),
}


def _check_landmarks68(landmarks68: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks68, dtype=np.float64)
    if points.shape != (68, 2):
        raise ConfigError(f"expected 68 (x, y) landmarks of shape (68, 2), got shape "
                          f"{points.shape}; pass iBUG 68-point landmarks")
    if not np.all(np.isfinite(points)):
        raise ConfigError("landmarks hold NaN or infinite values; the landmark detector failed "
                          "on this face")
    return points


def crop_centres(landmarks68: np.ndarray, aus: Sequence[str] = AUECRL_AUS) -> np.ndarray:
    """``(len(aus), 2, 2)`` float64: the two (x, y) crop centres of each AU, in the landmarks'
    own coordinates (the caller scales to its feature map and clamps, as AUE-CRL does)."""
    points = _check_landmarks68(landmarks68)
    _check_names("AU with a crop centre", aus, tuple(AU_CROP_CENTRES))
    out = np.empty((len(aus), 2, 2), dtype=np.float64)
    for a, au in enumerate(aus):
        for c, spec in enumerate(AU_CROP_CENTRES[au]):
            index = list(spec) if isinstance(spec, tuple) else [spec]
            out[a, c] = points[index].mean(axis=0)
    return out


# ---------------------------------------------------------------------------------------------
# The eight facial areas of the knowledge-driven self-supervised paper (Chang & Wang, CVPR 2022)
# ---------------------------------------------------------------------------------------------

#: Names of the 8 areas, 0-based (the paper's area k is index k-1). "left"/"right" are as seen
#: in the image (the subject's right side is image-left). The meanings are inferred from the
#: paper's Tab. 1 and Fig. 1b; the landmark definitions (our assumptions) are in area_boxes().
FACIAL_AREAS: tuple[str, ...] = (
    "central_forehead",   # paper area 1
    "left_brow_eye",      # 2
    "right_brow_eye",     # 3
    "glabella_nose_root",  # 4
    "left_cheek",         # 5
    "right_cheek",        # 6
    "mouth",              # 7
    "chin",               # 8
)
#: Symmetric area pairs, 0-based: the paper's (2, 3) is stated, (5, 6) implied.
SYMMETRIC_AREAS: tuple[tuple[int, int], ...] = ((1, 2), (4, 5))

#: AU -> areas (0-based) from the paper's Tab. 1.
AU_TO_AREAS: dict[str, tuple[int, ...]] = {
    "AU1": (0, 1, 2), "AU2": (0, 1, 2),
    "AU4": (1, 2, 3),
    "AU6": (1, 2, 4, 5),
    "AU7": (1, 2),
    "AU9": (3, 4, 5),
    "AU10": (4, 5, 6), "AU12": (4, 5, 6),
    "AU14": (6,), "AU23": (6,), "AU24": (6,),
    "AU15": (6, 7), "AU17": (6, 7), "AU25": (6, 7), "AU26": (6, 7),
}

#: HYPOTHESIS, not the paper's figure: its 26 predictor arrows (area q predicts area p) appear
#: only in Fig. 2. Tab. 1's co-occurrence gives 15 undirected area pairs; dropping the two
#: cross-side eye/cheek pairs (2-6, 3-5 in 1-based ids) leaves 13 pairs, i.e. 26 arrows, which
#: matches the count the paper states. 0-based (source, target) tuples.
_AREA_PAIRS_HYPOTHESIS: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (1, 4), (2, 5), (3, 4), (3, 5), (4, 5), (4, 6),
    (5, 6), (6, 7),
)
AREA_PREDICTOR_EDGES: tuple[tuple[int, int], ...] = tuple(
    edge for a, b in _AREA_PAIRS_HYPOTHESIS for edge in ((a, b), (b, a)))

#: Evaluation groups of the paper: an MLP per group reads the listed areas (0-based) and
#: predicts the listed AUs.
AU_GROUPS: tuple[tuple[tuple[int, ...], tuple[str, ...]], ...] = (
    ((0, 1, 2, 3), ("AU1", "AU2", "AU4")),
    ((1, 2, 4, 5), ("AU6", "AU7")),
    ((3, 4, 5, 6), ("AU9", "AU10", "AU12")),
    ((6,), ("AU14", "AU23", "AU24")),
    ((6, 7), ("AU15", "AU17", "AU25", "AU26")),
)


def area_boxes(landmarks68: np.ndarray, image_size_px: tuple[int, int]) -> np.ndarray:
    """``(8, 4)`` float64 boxes ``x1, y1, x2, y2`` of :data:`FACIAL_AREAS`, clipped to the
    image; ``image_size_px`` is ``(height, width)``.

    ASSUMPTIONS (the paper defines the areas only by drawing them in Fig. 1b). Sizes scale with
    the inter-ocular distance ``d`` (between the two eye centres, points 36-41 and 42-47), so
    the boxes follow the face's size; boxes are axis-aligned, meant for aligned faces.

    0 central forehead: x from brow point 19 to 24; y from (top of the brows - 0.6 d) to the
      lower of the two inner brow ends 21/22.
    1 left brow-eye: x from 17 to 21 (widened by 0.1 d); y from (brow top - 0.15 d) to
      (lowest point of eye 36-41 + 0.15 d).   2 right brow-eye: mirror with 22-26 and 42-47.
    3 glabella/nose root: x between inner eye corners 39 and 42; y from the inner brow ends
      21/22 (-0.1 d) down to nose point 29.
    4 left cheek: x from (eye corner 36 - 0.25 d) to nose wing 31; y from the lower eyelid
      (max of 40/41) to mouth corner 48.   5 right cheek: mirror with 45, 35, 46/47, 54.
    6 mouth: bounding box of the mouth points 48-67 grown by 0.15 d.
    7 chin: x from mouth corner 48 to 54; y from lower-lip point 57 to chin point 8.
    """
    p = _check_landmarks68(landmarks68)
    height, width = (int(v) for v in image_size_px)
    if height <= 0 or width <= 0:
        raise ConfigError(f"image_size_px must be positive (height, width), got "
                          f"{image_size_px}")
    eye_l, eye_r = p[36:42].mean(axis=0), p[42:48].mean(axis=0)
    d = float(np.linalg.norm(eye_r - eye_l))
    x, y = p[:, 0], p[:, 1]
    brow_top = y[17:27].min()
    boxes = np.array([
        [x[19], brow_top - 0.6 * d, x[24], max(y[21], y[22])],
        [x[17] - 0.1 * d, y[17:22].min() - 0.15 * d, x[21] + 0.1 * d, y[36:42].max() + 0.15 * d],
        [x[22] - 0.1 * d, y[22:27].min() - 0.15 * d, x[26] + 0.1 * d, y[42:48].max() + 0.15 * d],
        [x[39], min(y[21], y[22]) - 0.1 * d, x[42], y[29]],
        [x[36] - 0.25 * d, max(y[40], y[41]), x[31], y[48]],
        [x[35], max(y[46], y[47]), x[45] + 0.25 * d, y[54]],
        [x[48:68].min() - 0.15 * d, y[48:68].min() - 0.15 * d,
         x[48:68].max() + 0.15 * d, y[48:68].max() + 0.15 * d],
        [x[48], y[57], x[54], y[8]],
    ], dtype=np.float64)
    # Order each box's corners (a rotated or mirrored face can swap them), then clip.
    boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                            np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes
