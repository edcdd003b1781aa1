"""Data set readers on the real FER+ set and on small fixtures in the other published layouts."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from aue_edge.core.errors import DatasetError
from aue_edge.data import (DATASETS, Bp4d, Disfa, Fer2013Csv, Fer2013Folder, FerPlus,
                                 RafDbBasic, Sfew, get_dataset)
from aue_edge.data.disfa import extract_frames
from aue_edge.data.folds import BP4D_FOLDS, DISFA_FOLDS, fold_subjects
from aue_edge.data.knowledge import BP4D_AUS, DISFA_AUS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "datasets"
SPLIT_FOLDERS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
# label.csv rows per split, and images kept under each label mode (25,045 / 3,191 / 3,137 are
# the FER+ majority-vote split sizes reported in the literature).
FERPLUS_ROWS = {"train": 28558, "valid": 3579, "test": 3573}
FERPLUS_KEPT = {"majority": {"train": 25045, "valid": 3191, "test": 3137},
                "probability": {"train": 28385, "valid": 3555, "test": 3545}}


def _votes(root: Path, split: str) -> np.ndarray:
    with open(root / SPLIT_FOLDERS[split] / "label.csv", newline="") as f:
        return np.array([[int(v) for v in row[2:]] for row in csv.reader(f)])


def _expected_kept(votes: np.ndarray, mode: str) -> np.ndarray:
    """The FER+ rules written independently of the reader (vectorised over all rows)."""
    v = np.where(votes <= 1, 0, votes)
    emotions, other = v[:, :8], v[:, 8:]
    has_emotion = emotions.sum(1) > 0
    if mode == "majority":
        return has_emotion & (v.max(1) > 0.5 * v.sum(1)) & (v.argmax(1) < 8)
    return has_emotion & (emotions.max(1) >= other.max(1))


# ---------------------------------------------------------------------------------------------
# FER+ (real data)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["majority", "probability"])
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_ferplus_counts_match_label_files(ferplus_root, split, mode):
    dataset = FerPlus(ferplus_root, split, mode)
    votes = _votes(ferplus_root, split)
    assert dataset.rows == len(votes) == FERPLUS_ROWS[split]
    assert len(dataset) == _expected_kept(votes, mode).sum() == FERPLUS_KEPT[mode][split]
    report = dataset.report
    assert report.found == FERPLUS_ROWS[split]
    assert report.kept + sum(report.dropped.values()) == report.found
    assert sum(report.class_counts.values()) == len(dataset)


def test_ferplus_labels_and_probabilities(ferplus_root):
    majority = FerPlus(ferplus_root, "valid", "majority")
    probability = FerPlus(ferplus_root, "valid", "probability")
    votes = {row[0]: np.array([int(v) for v in row[2:]]) for row in
             csv.reader(open(ferplus_root / "FER2013Valid" / "label.csv", newline=""))}
    for dataset in (majority, probability):
        for i in range(0, len(dataset), 97):
            record = dataset._records[i]
            v = np.where(votes[Path(record.path).name] <= 1, 0, votes[Path(record.path).name])
            expected = v[:8] / v[:8].sum()
            np.testing.assert_allclose(record.label_probs, expected, rtol=1e-6)
            assert record.label == int(np.argmax(expected))
    # the first valid row (4 neutral, 1 anger, 4 contempt, 1 unknown) has no majority
    assert "fer0028638.png" not in {Path(p).name for p in majority.paths}
    assert "fer0028638.png" in {Path(p).name for p in probability.paths}
    sample = majority[0]
    assert sample.image.shape == (48, 48) and sample.image.dtype == np.uint8
    assert sample.aus is None and sample.subject is None


def test_ferplus_load_arrays(ferplus_root):
    dataset = FerPlus(ferplus_root, "test", "majority")
    images, labels, probs, names = dataset.load_arrays(progress=False)
    assert images.shape == (3137, 48, 48) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and probs.shape == (3137, 8) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert np.array_equal(labels, probs.argmax(1))  # the majority always tops the distribution
    assert names[0] == Path(dataset.paths[0]).name
    assert np.array_equal(images[5], cv2.imread(dataset.paths[5], cv2.IMREAD_GRAYSCALE))
    assert images.std() > 20  # real faces, not blank arrays


def _small_ferplus(ferplus_root: Path, tmp_path: Path, rows: int = 5) -> Path:
    src = ferplus_root / "FER2013Test"
    dst = tmp_path / "ferplus" / "FER2013Test"
    dst.mkdir(parents=True)
    lines = (src / "label.csv").read_text().splitlines()[:rows]
    (dst / "label.csv").write_text("\n".join(lines) + "\n")
    for line in lines:
        shutil.copy(src / line.split(",")[0], dst)
    return dst


def test_ferplus_bad_input_names_file_and_line(ferplus_root, tmp_path):
    folder = _small_ferplus(ferplus_root, tmp_path)
    label_file = folder / "label.csv"
    good = label_file.read_text().splitlines()
    assert len(FerPlus(folder.parent, "test")) >= 1

    label_file.write_text("\n".join(good[:2] + [good[2].rsplit(",", 1)[0]] + good[3:]))
    with pytest.raises(DatasetError, match=r"label\.csv:3: expected 12 fields"):
        FerPlus(folder.parent, "test")

    label_file.write_text("\n".join(good[:3] + [good[3].replace(",0,", ",x,", 1)] + good[4:]))
    with pytest.raises(DatasetError, match=r"label\.csv:4: vote count .* integer"):
        FerPlus(folder.parent, "test")

    label_file.write_bytes("\n".join(good).encode() + b"\n\xe9\xff,bad\n")
    with pytest.raises(DatasetError, match=r"label\.csv:6: not UTF-8"):
        FerPlus(folder.parent, "test")

    label_file.write_text("\n".join(good))
    (folder / good[1].split(",")[0]).unlink()
    with pytest.raises(DatasetError, match=r"label\.csv:2: image .* does not exist"):
        FerPlus(folder.parent, "test")


def test_ferplus_corrupt_image_is_named(ferplus_root, tmp_path):
    folder = _small_ferplus(ferplus_root, tmp_path, rows=12)
    dataset = FerPlus(folder.parent, "test", "probability")
    victim = Path(dataset.paths[0])
    victim.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DatasetError, match=victim.name):
        dataset[0]
    with pytest.raises(DatasetError, match=victim.name):
        dataset.load_arrays(progress=False)


def test_ferplus_rejects_unknown_options(ferplus_root):
    with pytest.raises(DatasetError, match="label_mode"):
        FerPlus(ferplus_root, "test", "soft")
    with pytest.raises(DatasetError, match="split"):
        FerPlus(ferplus_root, "val")


# ---------------------------------------------------------------------------------------------
# FER2013
# ---------------------------------------------------------------------------------------------

def test_fer2013_csv_usages():
    path = FIXTURES / "fer2013" / "fer2013.csv"
    train, valid, test = (Fer2013Csv(path, u) for u in ("train", "valid", "test"))
    assert (len(train), len(valid), len(test)) == (2, 2, 2)
    assert train.targets.tolist() == [0, 3] and test.targets.tolist() == [5, 1]
    assert len(Fer2013Csv(path, "PublicTest")) == 2
    sample = valid[1]
    assert sample.image.shape == (48, 48) and sample.image.dtype == np.uint8
    assert sample.path.endswith("fer2013.csv:5")
    assert "4 rows belong to other usages" in train.report.summary()


@pytest.mark.parametrize("edit, message", [
    (lambda rows: [rows[0].replace("Usage", "Use")] + rows[1:], r":1: expected the header"),
    (lambda rows: rows[:2] + ["7" + rows[2][1:]] + rows[3:], r":3: emotion must be in \[0, 6\]"),
    (lambda rows: rows[:1] + [rows[1].replace('"', '"1 ', 1)] + rows[2:],
     r":2: pixels must hold 2304 values"),
    (lambda rows: rows[:1] + [rows[1].replace("Training", "Train")] + rows[2:],
     r":2: Usage 'Train' is not one of"),
])
def test_fer2013_csv_bad_rows(tmp_path, edit, message):
    rows = (FIXTURES / "fer2013" / "fer2013.csv").read_text().splitlines()
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(edit(rows)) + "\n")
    with pytest.raises(DatasetError, match=message):
        Fer2013Csv(path, "train")


def test_fer2013_folder(tmp_path):
    train = Fer2013Folder(FIXTURES / "fer2013_folder", "train")
    assert len(train) == 4
    assert [train.labels[y] for y in train.targets] == ["anger", "anger", "happiness",
                                                        "neutral"]
    assert train[0].image.shape == (48, 48)
    root = tmp_path / "fer"
    shutil.copytree(FIXTURES / "fer2013_folder", root)
    (root / "train" / "happy" / "Thumbs.db").write_bytes(b"\0")
    counted = Fer2013Folder(root, "train")
    assert len(counted) == 4 and sum(counted.report.dropped.values()) == 1
    assert "not an image file" in counted.report.summary()
    (root / "train" / "contempt").mkdir()
    with pytest.raises(DatasetError, match="'contempt' is not a class"):
        Fer2013Folder(root, "train")


# ---------------------------------------------------------------------------------------------
# RAF-DB basic and SFEW 2.0
# ---------------------------------------------------------------------------------------------

def test_rafdb_splits_images_and_landmarks(tmp_path):
    root = FIXTURES / "rafdb" / "basic"
    train = RafDbBasic(root, "train")
    test = RafDbBasic(root, "test", aligned=False, landmarks="manual")
    assert len(train) == 4 and len(test) == 2
    # file labels 4, 1, 7, 5 (1-based, RAF order)
    assert [train.labels[y] for y in train.targets] == ["happiness", "surprise", "neutral",
                                                        "sadness"]
    assert train.paths[0].endswith("Image/aligned/train_00001_aligned.jpg")
    assert train[0].image.shape == (32, 32, 3) and train[0].landmarks is None
    assert test[0].image.shape == (48, 48, 3)
    assert test[0].landmarks.shape == (5, 2) and test[0].landmarks[0].tolist() == [17, 20]
    assert RafDbBasic(root, "test", aligned=False, landmarks="auto")[1].landmarks.shape == \
        (37, 2)
    # user-supplied 68-point files for the aligned images
    lm_dir = tmp_path / "lm68"
    lm_dir.mkdir()
    for name in ("test_0001", "test_0002"):
        (lm_dir / f"{name}.txt").write_text("".join(f"{i} {i + 1}\n" for i in range(68)))
    with68 = RafDbBasic(root, "test", landmarks=lm_dir)
    assert with68[1].landmarks.shape == (68, 2) and with68[1].landmarks[67].tolist() == [67, 68]
    with pytest.raises(DatasetError, match="original-image coordinates"):
        RafDbBasic(root, "test", aligned=True, landmarks="manual")


def test_rafdb_bad_input(tmp_path):
    root = tmp_path / "basic"
    shutil.copytree(FIXTURES / "rafdb" / "basic", root)
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    good = label_file.read_text().splitlines()
    label_file.write_text("\n".join(good[:1] + ["train_00002.jpg 8"] + good[2:]) + "\n")
    with pytest.raises(DatasetError, match=r"list_patition_label\.txt:2: label must be in"):
        RafDbBasic(root, "train")
    label_file.write_text("\n".join(good) + "\n")
    (root / "Image" / "aligned" / "train_00003_aligned.jpg").unlink()
    with pytest.raises(DatasetError, match=r":3: image .*train_00003_aligned\.jpg does not"):
        RafDbBasic(root, "train")
    (root / "Annotation" / "manual" / "test_0002_manual_attri.txt").write_text("1.0\t2.0\n")
    with pytest.raises(DatasetError, match="test_0002_manual_attri.txt: expected 5 landmark"):
        RafDbBasic(root, "test", aligned=False, landmarks="manual")


def test_sfew_class_folders():
    train = Sfew(FIXTURES / "sfew", "train")
    valid = Sfew(FIXTURES / "sfew", "valid", aligned=True)
    assert len(train) == 4 and len(valid) == 2
    assert sorted(train.labels[y] for y in train.targets) == ["anger", "happiness",
                                                             "happiness", "neutral"]
    assert valid[0].image.shape == (24, 24, 3) and "Val_Aligned_Faces" in valid.paths[0]
    assert train.report.class_counts["happiness"] == 2
    with pytest.raises(DatasetError, match="never released"):
        Sfew(FIXTURES / "sfew", "test")


# ---------------------------------------------------------------------------------------------
# BP4D and DISFA
# ---------------------------------------------------------------------------------------------

def test_folds_are_subject_exclusive():
    for folds, sizes in ((BP4D_FOLDS, (14, 14, 13)), (DISFA_FOLDS, (9, 9, 9))):
        assert tuple(len(f) for f in folds) == sizes
        everyone = [s for f in folds for s in f]
        assert len(set(everyone)) == len(everyone)
        for fold in (1, 2, 3):
            train, test = fold_subjects(folds, fold, "train"), fold_subjects(folds, fold, "test")
            assert not set(train) & set(test) and len(train) + len(test) == len(everyone)
    assert DISFA_FOLDS[0][:2] == ("SN002", "SN010")
    with pytest.raises(DatasetError, match="fold"):
        fold_subjects(BP4D_FOLDS, 4, "train")


def test_bp4d_reads_occurrence_and_folds():
    root = FIXTURES / "bp4d"
    test1 = Bp4d(root, fold=1, split="test")
    train1 = Bp4d(root, fold=1, split="train")
    assert set(test1.subjects) == {"F001"} and set(train1.subjects) == {"M011", "F007"}
    assert len(test1) == 3 and len(train1) == 6
    rows = (root / "AUCoding" / "AU_OCC" / "F001_T1.csv").read_text().splitlines()
    header = rows[0].split(",")
    columns = [header.index(au[2:]) for au in BP4D_AUS]
    for i, row in enumerate(rows[1:]):
        fields = row.split(",")
        expected = [-1 if fields[c] == "9" else int(fields[c]) for c in columns]
        assert test1[i].aus.tolist() == expected
    assert test1.au_matrix()[2, 0] == -1  # uncoded AU1 in the fixture
    assert train1.au_matrix().shape == (6, 12) and train1.au_matrix().dtype == np.int8
    assert any(p.endswith("M011/T2/0012.jpg") for p in train1.paths)  # zero-padded names
    assert test1[0].image.shape == (32, 32, 3) and test1[0].subject == "F001"
    assert "13 subjects of this split have no AU file" in test1.report.summary()


def test_bp4d_bad_input(tmp_path):
    root = tmp_path / "bp4d"
    shutil.copytree(FIXTURES / "bp4d", root)
    au_file = root / "AUCoding" / "AU_OCC" / "F001_T1.csv"
    good = au_file.read_text().splitlines()
    au_file.write_text("\n".join(good[:2] + [good[2].replace(",0,", ",5,", 1)] + good[3:]))
    with pytest.raises(DatasetError, match=r"F001_T1\.csv:3: AU codes must be 0, 1 or 9"):
        Bp4d(root, 1, "test")
    au_file.write_text("\n".join([good[0].replace(",12,", ",99,")] + good[1:]))
    with pytest.raises(DatasetError, match=r"F001_T1\.csv:1: header has no column for AU12"):
        Bp4d(root, 1, "test")
    au_file.write_text("\n".join(good))
    (root / "Sequences" / "F001" / "T1" / "2441.jpg").unlink()
    with pytest.raises(DatasetError, match=r"F001_T1\.csv:3: no image for frame 2441"):
        Bp4d(root, 1, "test")
    skipped = Bp4d(root, 1, "test", on_missing_image="skip")
    assert len(skipped) == 2 and skipped.report.dropped["coded frame has no image file"] == 1
    (root / "AUCoding" / "AU_OCC" / "X001_T1.csv").write_text("")
    with pytest.raises(DatasetError, match="X001_T1.csv: not a BP4D AU file name"):
        Bp4d(root, 1, "test", on_missing_image="skip")


def test_disfa_binarises_intensity_at_two():
    root = FIXTURES / "disfa"
    test1 = Disfa(root, fold=1, split="test")
    assert set(test1.subjects) == {"SN002"} and len(test1) == 3
    assert set(Disfa(root, fold=1, split="train").subjects) == {"SN013", "SN003"}
    for i, frame in enumerate((1, 2, 3)):
        expected = []
        for au in DISFA_AUS:
            lines = (root / "ActionUnit_Labels" / "SN002" / f"SN002_au{au[2:]}.txt"
                     ).read_text().splitlines()
            intensity = int(lines[frame - 1].split(",")[1])
            expected.append(1 if intensity >= 2 else 0)
        assert test1[i].aus.tolist() == expected
    matrix = Disfa(root, fold=2, split="all").au_matrix()
    assert matrix.shape == (9, 8) and set(np.unique(matrix)) == {0, 1}


def test_disfa_bad_input(tmp_path):
    root = tmp_path / "disfa"
    shutil.copytree(FIXTURES / "disfa", root)
    label = root / "ActionUnit_Labels" / "SN002" / "SN002_au4.txt"
    label.write_text("1,0\n2,7\n3,1\n")
    with pytest.raises(DatasetError, match=r"SN002_au4\.txt:2: AU4 intensity must be in"):
        Disfa(root, 1, "test")
    label.write_text("1,0\n2,1\n")
    with pytest.raises(DatasetError, match="same frames"):
        Disfa(root, 1, "test")
    label.write_text("1,0\n2,1\n3,3\n")
    (root / "Frames" / "LeftCamera" / "SN002" / "00003.jpg").unlink()
    with pytest.raises(DatasetError, match="no image for frame 3 of SN002"):
        Disfa(root, 1, "test")
    skipped = Disfa(root, 1, "test", on_missing_image="skip")
    assert len(skipped) == 2 and sum(skipped.report.dropped.values()) == 1


def test_disfa_extract_frames_from_video(tmp_path, astronaut_bgr):
    video_dir = tmp_path / "Videos_LeftCamera"
    video_dir.mkdir()
    writer = cv2.VideoWriter(str(video_dir / "LeftVideoSN002_comp.avi"),
                             cv2.VideoWriter_fourcc(*"MJPG"), 20, (64, 64))
    assert writer.isOpened()
    face = cv2.resize(astronaut_bgr[40:200, 140:300], (64, 64))
    for shift in range(4):
        writer.write(np.roll(face, 3 * shift, axis=1))
    writer.release()
    assert extract_frames(tmp_path) == {"SN002": 4}
    labels = tmp_path / "ActionUnit_Labels" / "SN002"
    labels.mkdir(parents=True)
    for au in DISFA_AUS:
        (labels / f"SN002_au{au[2:]}.txt").write_text("1,0\n2,2\n3,4\n4,1\n")
    dataset = Disfa(tmp_path, 1, "test")
    assert len(dataset) == 4 and dataset.au_matrix()[:, 0].tolist() == [0, 1, 1, 0]
    assert dataset[0].image.shape == (64, 64, 3)
    assert np.abs(dataset[0].image.astype(int) - face).mean() < 12  # the frame, not noise


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

def test_get_dataset_registry(ferplus_root):
    assert set(DATASETS) == {"ferplus", "fer2013_csv", "fer2013_folder", "rafdb", "sfew",
                             "bp4d", "disfa", "ckplus"}
    assert len(get_dataset("ferplus", ferplus_root, "test", label_mode="probability")) == 3545
    assert len(get_dataset("fer2013_csv", FIXTURES / "fer2013" / "fer2013.csv", "test")) == 2
    assert len(get_dataset("bp4d", FIXTURES / "bp4d", "train", fold=3)) == 6
    assert len(get_dataset("sfew", FIXTURES / "sfew", "valid")) == 2
    with pytest.raises(DatasetError, match="unknown"):
        get_dataset("affectnet", FIXTURES, "train")
    with pytest.raises(IndexError):
        get_dataset("sfew", FIXTURES / "sfew", "valid")[2]


def test_data_cli_reports_and_plots(tmp_path, capsys):
    from aue_edge.data.cli import data_main

    plot = tmp_path / "bp4d.png"
    assert data_main(["bp4d", str(FIXTURES / "bp4d"), "--split", "train", "--fold", "1",
                      "--decode-all", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "bp4d [fold1/train]" in out and "6 kept" in out
    assert cv2.imread(str(plot)) is not None
    assert data_main(["rafdb", str(FIXTURES / "rafdb" / "basic"), "--split", "test",
                      "--original", "--plot", str(tmp_path / "raf.png")]) == 0
    assert "2 kept" in capsys.readouterr().out
    root = tmp_path / "sfew"
    shutil.copytree(FIXTURES / "sfew", root)
    next((root / "Val" / "Sad").iterdir()).write_bytes(b"broken")
    assert data_main(["sfew", str(root), "--split", "valid"]) == 0  # listing does not decode
    with pytest.raises(DatasetError, match="cannot be decoded"):
        data_main(["sfew", str(root), "--split", "valid", "--decode-all"])
