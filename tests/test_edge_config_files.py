"""aue_edge.core.config_files: the shared YAML/JSON readers name the file and say what failed."""
import pytest

from aue_edge.core.config_files import read_json, read_yaml, read_yaml_with_lines
from aue_edge.core.errors import ConfigError, ModelFileError


def test_yaml_data_and_key_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# comment\nbackend: ort\n\nmax_faces: 3\n", encoding="utf-8")
    data, lines = read_yaml_with_lines(path, "test config")
    assert data == {"backend": "ort", "max_faces": 3}
    assert lines == {"backend": 2, "max_faces": 4}
    path.write_text("", encoding="utf-8")
    assert read_yaml(path, "test config") is None


def test_yaml_errors_name_file_and_hint(tmp_path):
    with pytest.raises(ConfigError, match=r"test config .*missing\.yaml does not exist; "
                                          r"pass another"):
        read_yaml(tmp_path / "missing.yaml", "test config", "pass another")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: [ort\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"test config .*bad\.yaml is not valid YAML"):
        read_yaml(bad, "test config")
    bad.write_bytes(b"backend: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML \(UTF-8 text "
                                          r"expected\): 'utf-8' codec"):
        read_yaml(bad, "test config")


def test_json_errors_use_the_callers_error_type(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"a": [1, 2]}', encoding="utf-8")
    assert read_json(path, "run") == {"a": [1, 2]}
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"run .*run\.json is not valid JSON"):
        read_json(path, "run", error=ModelFileError)
    with pytest.raises(ModelFileError, match=r"does not exist$"):
        read_json(tmp_path / "none.json", "run", error=ModelFileError)
