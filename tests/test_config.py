"""config.py: how a per-layer config is read (the rest of its behaviour is tested with the
options it sets: test_config_order_thresholds.py, test_api.py, test_cli_errors.py)."""

import pytest

from exprune_onnx.config import Options, configured
from exprune_onnx.errors import ConfigError

CONTENT = '{"default": {"k": 8}, "layers": {"fc1": {"skip": true}}}'


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors write one; json refused it, in its own words ('decode using utf-8-sig')."""
    path = tmp_path / "c.json"
    path.write_bytes(b"\xef\xbb\xbf" + CONTENT.encode())
    options = configured(Options(), path)
    assert options.k == 8 and options.setting("fc1").skip


def test_a_config_given_as_json_text_is_its_content():
    """config= takes a path or the file's content: a JSON string was taken for a path."""
    options = configured(Options(), "  " + CONTENT)
    assert options.k == 8 and options.setting("fc1").skip
    with pytest.raises(ConfigError, match="config: not readable JSON"):
        configured(Options(), '{"default": ')
    with pytest.raises(ConfigError, match="no such config file"):
        configured(Options(), "missing.json")


def test_json_text_may_start_with_a_byte_order_mark_and_a_file_may_start_with_a_brace(tmp_path, monkeypatch):
    """A file's content read as text keeps its mark (it was taken for a path); a file named
    '{a}.json' could not be given at all (it was taken for JSON text)."""
    options = configured(Options(), "\ufeff" + CONTENT)
    assert options.k == 8 and options.setting("fc1").skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "{a}.json").write_text(CONTENT)
    assert configured(Options(), "{a}.json").k == 8


def test_a_config_path_the_system_cannot_use_is_a_config_error(tmp_path):
    """A name too long for the file system raised a bare OSError from the API."""
    with pytest.raises(ConfigError, match="cannot use it as a config file.*too long"):
        configured(Options(), str(tmp_path / ("c" * 300)))
    with pytest.raises(ConfigError, match="not a config file"):
        configured(Options(), str(tmp_path))
