"""The FACS knowledge tables against SEED_FACTS (AUE-CRL code, Chang & Wang CVPR22, EMFACS)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from aue_edge.core.errors import ConfigError
from aue_edge.data import knowledge as k

# AUE-CRL's 7x17 prior as SEED_FACTS §1 tabulates it (1 primary, .5 secondary, 0 other), rows
# in RAF order (surprise, fear, disgust, happiness, sadness, anger, neutral).
SEED_TABLE = {
    "surprise": ({1, 2, 5, 25, 26}, {16}),
    "fear": ({1, 2, 4, 5, 7, 20}, {23, 25}),
    "disgust": ({9, 10}, {17, 25}),
    "happiness": ({6, 12}, {7, 25}),
    "sadness": ({1, 7, 15}, {4, 6, 17}),
    "anger": ({4, 5, 23, 24}, {7, 17}),
    "neutral": (set(), set()),
}


def _face68(cx: float = 100.0, cy: float = 110.0, scale: float = 1.0) -> np.ndarray:
    """A hand-made, left-right symmetric 68-point face (iBUG order) around (cx, cy)."""
    p = np.zeros((68, 2))
    t = np.linspace(np.pi, 0, 17)
    p[0:17] = np.c_[60 * np.cos(t), 10 + 60 * np.sin(t)]                     # jaw, 8 = chin
    p[17:22] = np.c_[np.linspace(-50, -12, 5), [-40, -46, -48, -46, -42]]    # left brow
    p[22:27] = np.c_[-p[21:16:-1, 0], p[21:16:-1, 1]]                        # right brow
    p[27:31] = np.c_[np.zeros(4), np.linspace(-30, 0, 4)]                    # nose bridge
    p[31:36] = np.c_[np.linspace(-12, 12, 5), [8, 10, 11, 10, 8]]            # nostrils
    eye = np.array([[-40, -25], [-34, -29], [-26, -29], [-20, -25], [-26, -21], [-34, -21]])
    p[36:42] = eye
    p[42:48] = np.c_[-eye[[3, 2, 1, 0, 5, 4], 0], eye[[3, 2, 1, 0, 5, 4], 1]]
    outer = np.c_[np.linspace(-22, 22, 7), [30, 26, 24, 25, 24, 26, 30]]
    p[48:55] = outer
    p[55:60] = np.c_[np.linspace(16, -16, 5), [36, 40, 41, 40, 36]]
    p[60:65] = np.c_[np.linspace(-18, 18, 5), [30, 28, 28, 28, 30]]
    p[65:68] = np.c_[np.linspace(10, -10, 3), [32, 33, 32]]
    return p * scale + [cx, cy]


def test_au_lists_match_the_papers():
    assert k.AUECRL_AUS == ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12",
                            "AU15", "AU16", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26")
    assert k.BP4D_AUS == ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU14", "AU15",
                          "AU17", "AU23", "AU24")
    assert k.DISFA_AUS == ("AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU25", "AU26")
    for au in set(k.AUECRL_AUS) | set(k.BP4D_AUS) | set(k.DISFA_AUS):
        assert k.AU_DESCRIPTIONS[au]
    assert k.AU_DESCRIPTIONS["AU12"] == "lip corner puller"


def test_label_sets_and_mapping():
    assert k.RAFDB_LABELS == ("surprise", "fear", "disgust", "happiness", "sadness", "anger",
                              "neutral")
    assert k.SFEW_LABELS == k.RAFDB_LABELS
    assert k.FERPLUS_LABELS[0] == "neutral" and k.FERPLUS_LABELS[-1] == "contempt"
    assert k.FER2013_LABELS == ("anger", "disgust", "fear", "happiness", "sadness", "surprise",
                                "neutral")
    to_raf = k.label_mapping(k.FERPLUS_LABELS, k.RAFDB_LABELS)
    assert to_raf.dtype == np.int64
    assert to_raf.tolist() == [6, 3, 0, 4, 5, 2, 1, -1]  # contempt has no RAF-DB class
    back = k.label_mapping(k.RAFDB_LABELS, k.FERPLUS_LABELS)
    for i, j in enumerate(back):
        assert k.FERPLUS_LABELS[j] == k.RAFDB_LABELS[i]
    with pytest.raises(ConfigError, match="Happy"):
        k.label_mapping(("Happy",), k.RAFDB_LABELS)


def test_bands_and_centres():
    assert k.BAND_RANGES == {"primary": (0.75, 1.0), "secondary": (0.5, 0.75),
                             "other": (0.0, 0.25)}
    assert k.BAND_INIT == {"primary": 1.0, "secondary": 0.5, "other": 0.1}
    assert k.BAND_CENTRES == pytest.approx({"primary": 0.875, "secondary": 0.625,
                                            "other": 0.125})


def test_prior_matrix_reproduces_aue_crl_table():
    init, low, high = k.prior_matrix(k.RAFDB_LABELS)
    assert init.shape == low.shape == high.shape == (7, 17) and init.dtype == np.float32
    for e, label in enumerate(k.RAFDB_LABELS):
        primary, secondary = SEED_TABLE[label]
        for a, au in enumerate(k.AUECRL_AUS):
            n = int(au[2:])
            band = "primary" if n in primary else "secondary" if n in secondary else "other"
            assert init[e, a] == pytest.approx(k.BAND_INIT[band]), (label, au)
            assert (low[e, a], high[e, a]) == pytest.approx(k.BAND_RANGES[band]), (label, au)
    # SEED_FACTS' Sad row: AU7 primary, AU4 secondary (kept as released)
    sad = init[k.RAFDB_LABELS.index("sadness")]
    assert sad[k.AUECRL_AUS.index("AU7")] == 1.0 and sad[k.AUECRL_AUS.index("AU4")] == 0.5
    assert np.all(init[k.RAFDB_LABELS.index("neutral")] == np.float32(0.1))


def test_prior_for_ferplus_labels_includes_contempt_and_au14():
    aus = k.AUECRL_AUS + ("AU14",)
    init, low, _high = k.prior_matrix(k.FERPLUS_LABELS, aus)
    contempt = init[k.FERPLUS_LABELS.index("contempt")]
    assert contempt[aus.index("AU12")] == 0.5  # secondary: documented choice
    assert contempt[aus.index("AU14")] == pytest.approx(0.1)  # AU14 only "other" everywhere
    assert (contempt > 0.1).sum() == 1
    assert low.shape == (8, 18)
    with pytest.raises(ConfigError, match="expression"):
        k.prior_matrix(("joy",))


def test_clamp_prior_keeps_each_entry_in_its_band():
    init, low, high = k.prior_matrix(k.RAFDB_LABELS)
    drifted = init + np.random.default_rng(0).normal(0, 0.5, init.shape).astype(np.float32)
    clamped = k.clamp_prior(drifted, low, high)
    assert np.all(clamped >= low) and np.all(clamped <= high)
    inside = (drifted >= low) & (drifted <= high)
    assert np.array_equal(clamped[inside], drifted[inside])  # in-band values untouched
    assert k.clamp_prior(np.full_like(init, 5.0), low, high).max() == 1.0
    with pytest.raises(ConfigError, match="shape"):
        k.clamp_prior(init[:3], low, high)


def test_au_pairs_and_indices():
    assert k.POSITIVE_AU_PAIRS == (
        ("AU1", "AU2"), ("AU4", "AU7"), ("AU4", "AU9"), ("AU7", "AU9"), ("AU6", "AU12"),
        ("AU9", "AU17"), ("AU15", "AU17"), ("AU15", "AU24"), ("AU17", "AU24"),
        ("AU23", "AU24"))
    assert k.NEGATIVE_AU_PAIRS == (("AU2", "AU6"), ("AU2", "AU7"), ("AU12", "AU15"),
                                   ("AU12", "AU17"))
    pos = k.pair_indices(k.POSITIVE_AU_PAIRS)
    assert pos.shape == (10, 2) and pos.dtype == np.int64
    assert pos[0].tolist() == [0, 1] and pos[-1].tolist() == [13, 14]
    assert k.pair_indices(k.NEGATIVE_AU_PAIRS)[2].tolist() == [8, 9]
    assert k.pair_indices([], k.BP4D_AUS).shape == (0, 2)
    with pytest.raises(ConfigError, match="AU5"):
        k.pair_indices([("AU1", "AU5")], k.BP4D_AUS)


def test_emfacs_prototypes_parse_the_codes():
    assert k.EMFACS_PROTOTYPES["contempt"] == ("AU12", "AU14")
    assert k.EMFACS_PROTOTYPES["surprise"] == ("AU1", "AU2", "AU5", "AU26")
    assert k.EMFACS_PROTOTYPES["fear"] == ("AU1", "AU2", "AU4", "AU5", "AU7", "AU20", "AU26")
    assert set(k.EMFACS_PROTOTYPES) == set(k.EXPRESSIONS) - {"neutral"}
    with pytest.raises(ConfigError, match="12X"):
        k.parse_facs_code("6+12X")


def test_crop_centres_on_hand_made_landmarks():
    landmarks = np.c_[np.arange(68.0), 2 * np.arange(68.0)]  # point i = (i, 2i)
    centres = k.crop_centres(landmarks)
    assert centres.shape == (17, 2, 2)
    au = {name: centres[i] for i, name in enumerate(k.AUECRL_AUS)}
    assert au["AU1"].tolist() == [[21, 42], [22, 44]]
    assert au["AU4"].tolist() == [[21.5, 43], [21.5, 43]]  # mid(21,22) and mid(19,24)
    assert au["AU5"].tolist() == [[37.5, 75], [43.5, 87]]
    assert au["AU16"].tolist() == [[58, 116], [56, 112]]
    assert au["AU25"].tolist() == [[62, 124], [66, 132]]
    assert k.crop_centres(landmarks, ("AU12",)).shape == (1, 2, 2)
    assert set(k.AU_CROP_CENTRES) == set(k.AUECRL_AUS)
    with pytest.raises(ConfigError, match="AU14"):
        k.crop_centres(landmarks, ("AU14",))
    with pytest.raises(ConfigError, match=r"\(68, 2\)"):
        k.crop_centres(landmarks[:66])
    bad = landmarks.copy()
    bad[5, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        k.crop_centres(bad)


def test_area_boxes_inside_the_image_and_anatomically_ordered():
    face = _face68()
    boxes = k.area_boxes(face, (220, 200))
    assert boxes.shape == (8, 4)
    assert np.all(boxes[:, [0, 2]] >= 0) and np.all(boxes[:, [0, 2]] <= 200)
    assert np.all(boxes[:, [1, 3]] >= 0) and np.all(boxes[:, [1, 3]] <= 220)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    area = {name: i for i, name in enumerate(k.FACIAL_AREAS)}
    assert centre_y[area["central_forehead"]] < centre_y[area["glabella_nose_root"]] \
        < centre_y[area["mouth"]] < centre_y[area["chin"]]
    assert centre_x[area["left_cheek"]] < 100 < centre_x[area["right_cheek"]]
    # a symmetric face gives mirror-image boxes for the symmetric area pairs
    for a, b in k.SYMMETRIC_AREAS:
        mirrored = [200 - boxes[b, 2], boxes[b, 1], 200 - boxes[b, 0], boxes[b, 3]]
        assert boxes[a] == pytest.approx(mirrored)


def test_area_boxes_are_clipped_at_the_image_border():
    face = _face68(cx=20.0, cy=30.0, scale=1.5)  # face hangs over the top-left corner
    boxes = k.area_boxes(face, (120, 100))
    assert boxes.min() >= 0 and np.all(boxes[:, [0, 2]] <= 100)
    assert np.all(boxes[:, [1, 3]] <= 120)
    assert boxes[k.FACIAL_AREAS.index("central_forehead"), 1] == 0  # clipped, not negative
    with pytest.raises(ConfigError, match="positive"):
        k.area_boxes(face, (0, 100))


def test_area_tables_follow_the_paper():
    assert len(k.FACIAL_AREAS) == 8
    assert k.SYMMETRIC_AREAS == ((1, 2), (4, 5))
    assert k.AU_TO_AREAS["AU6"] == (1, 2, 4, 5) and k.AU_TO_AREAS["AU26"] == (6, 7)
    # each evaluation group reads exactly the union of its AUs' areas (Tab. 1 vs groups)
    for areas, aus in k.AU_GROUPS:
        assert set(areas) == set().union(*(k.AU_TO_AREAS[au] for au in aus))
    assert {au for _areas, aus in k.AU_GROUPS for au in aus} == set(k.BP4D_AUS) | set(
        k.DISFA_AUS)
    # predictor arrows: 26, both directions, all within Tab. 1's 15 co-occurring area pairs
    cooccur = {tuple(sorted(pair)) for areas in k.AU_TO_AREAS.values()
               for pair in itertools.combinations(areas, 2)}
    assert len(cooccur) == 15
    edges = set(k.AREA_PREDICTOR_EDGES)
    assert len(k.AREA_PREDICTOR_EDGES) == len(edges) == 26
    assert all((b, a) in edges and a != b for a, b in edges)
    assert {tuple(sorted(e)) for e in edges} == cooccur - {(1, 5), (2, 4)}
