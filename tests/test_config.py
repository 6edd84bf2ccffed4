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
