from pathlib import Path

import pytest

from hpacs.config import ConfigError, load_config


def test_defaults_match_the_documented_ones():
    c = load_config(environ={})
    assert c.server.data_dir == Path("hpacs-data")
    assert (c.server.host, c.server.dicom_port, c.server.http_port) == ("127.0.0.1", 11112, 8042)
    assert c.server.ae_title == "HPACS"
    assert c.store.duplicate_policy == "keep"


def test_file_then_env_then_flags(tmp_path):
    f = tmp_path / "hpacs.toml"
    f.write_text('[server]\ndicom_port = 104\nae_title = "FILE"\n[dicom]\nmax_associations = 3\n')
    c = load_config(f, {"server": {"ae_title": "FLAG"}},
                    environ={"HPACS_SERVER__DICOM_PORT": "4242",
                             "HPACS_DICOM__CHECK_CALLED_AE": "no"})
    assert c.server.dicom_port == 4242
    assert c.server.ae_title == "FLAG"
    assert c.dicom.max_associations == 3
    assert c.dicom.check_called_ae is False


@pytest.mark.parametrize("text", ['[server]\nnope = 1\n', '[store]\nduplicate_policy = "maybe"\n',
                                  '[server]\ndicom_port = "x"\n', 'not toml ['])
def test_bad_config_is_a_clear_error(tmp_path, text):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError):
        load_config(f, environ={})
