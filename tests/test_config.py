from pathlib import Path

import pytest

from hpacs.config import ConfigError, load_config


def test_defaults_match_the_documented_ones():
    c = load_config(environ={})
    assert c.server.data_dir == Path("hpacs-data")
    assert (c.server.host, c.server.dicom_port, c.server.http_port) == ("127.0.0.1", 11112, 8042)
    assert c.server.ae_title == "HPACS"
    assert c.store.duplicate_policy == "keep"
    assert c.pixels.allow_lossy_transcode is False  # lossless data stays lossless unless asked


def test_lossy_transcoding_from_toml_and_env(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[pixels]\nallow_lossy_transcode = true\n")
    assert load_config(f, environ={}).pixels.allow_lossy_transcode is True
    env = {"HPACS_PIXELS__ALLOW_LOSSY_TRANSCODE": "false"}
    assert load_config(f, environ=env).pixels.allow_lossy_transcode is False


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


def test_remote_destinations_from_toml_and_env(tmp_path):
    from hpacs.config import RemoteAE

    f = tmp_path / "hpacs.toml"
    f.write_text('[[remote]]\nae_title = "WS1"\nhost = "10.0.0.5"\nport = 104\n\n'
                 '[[remote]]\nae_title = "ARCHIVE"\nhost = "pacs.local"\nport = "11112"\n')
    c = load_config(f, environ={})
    assert c.remote == (RemoteAE("WS1", "10.0.0.5", 104), RemoteAE("ARCHIVE", "pacs.local", 11112))
    assert c.remote_ae("ARCHIVE ") == RemoteAE("ARCHIVE", "pacs.local", 11112)
    assert c.remote_ae("NOPE") is None
    c = load_config(f, environ={"HPACS_REMOTE": "A@127.0.0.1:4000, B@::1:4001"})
    assert c.remote == (RemoteAE("A", "127.0.0.1", 4000), RemoteAE("B", "::1", 4001))
    assert load_config(environ={}).remote == ()


@pytest.mark.parametrize("text", [
    '[[remote]]\nae_title = "X"\nhost = "h"\n',
    '[[remote]]\nae_title = "X"\nhost = "h"\nport = 0\n',
    '[[remote]]\nae_title = "WAY_TOO_LONG_AE_TITLE"\nhost = "h"\nport = 1\n',
    '[[remote]]\nae_title = "X"\nhost = "h"\nport = 1\nextra = 2\n',
    '[[remote]]\nae_title = "X"\nhost = "h"\nport = 1\n[[remote]]\nae_title = "X"\nhost = "g"\n'
    'port = 2\n',
    'remote = 3\n',
])
def test_bad_remote_is_a_clear_error(tmp_path, text):
    f = tmp_path / "hpacs.toml"
    f.write_text(text)
    with pytest.raises(ConfigError):
        load_config(f, environ={})
    with pytest.raises(ConfigError):
        load_config(environ={"HPACS_REMOTE": "nohostport"})
