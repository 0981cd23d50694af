"""Bundle archives as a workstation packs them and a device unpacks them: the manifest first, the same bytes
each time, only plain files the manifest lists, a signature, a slim archive per device kind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge.errors import BundleError
from edge.formats.archive import pack, unpack
from edge.formats.bundle import Bundle
from tests.support import ROOT
from tests.support.updates import slim_copy

TFLITE_FILES = ["float32.tflite", "float16.tflite", "dynamic.tflite", "int8.tflite"]


@pytest.fixture()
def v2(tmp_path: Path, other_bundle_dir: Path) -> Path:
    return slim_copy(other_bundle_dir, tmp_path / "v2", "2026-06-01T00:00:00+00:00")


def test_an_archive_is_manifest_first_and_unpacks_only_plain_files(tmp_path, v2):
    import tarfile

    archive = tmp_path / "v2.tar"
    digest = pack(v2, archive)
    time.sleep(1.1)  # a second later, on another workstation: the same bundle packs to the same bytes
    assert pack(v2, tmp_path / "again.tar") == digest
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == "manifest.json" and set(tar.getnames()) == {
            "manifest.json",
            "int8.tflite",
            "acceptance.npz",
        }
    assert Bundle.open(unpack(archive, tmp_path / "out", max_bytes=10**9).path).manifest.name == "other-model"
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(v2 / "manifest.json", arcname="manifest.json")
        tar.add(v2 / "int8.tflite", arcname="../escape.tflite")
    with pytest.raises(BundleError, match="only plain files"):
        unpack(evil, tmp_path / "evil", max_bytes=10**9)
    assert not (tmp_path / "escape.tflite").exists()
    with pytest.raises(BundleError, match="more than the limit"):
        unpack(archive, tmp_path / "small", max_bytes=1000)


def test_bundle_keygen_and_a_signed_pack_from_the_command_line(tmp_path, v2, capsys):
    import tarfile

    from edge.cli import main
    from edge.formats.signing import verify

    key = tmp_path / "fleet.pem"
    assert main(["bundle", "keygen", "--out", str(key)]) == 0
    public = capsys.readouterr().out.split("public_key: ")[1].strip()
    assert key.stat().st_mode & 0o777 == 0o600
    assert main(["bundle", "keygen", "--out", str(key)]) == 2  # never overwritten
    archive = tmp_path / "v2.tar"
    assert main(["bundle", "pack", str(v2), "--out", str(archive), "--sign", str(key)]) == 0
    with tarfile.open(archive) as tar:
        assert tar.getnames()[:2] == ["manifest.json", "manifest.sig"]
    verify(unpack(archive, tmp_path / "out", max_bytes=10**9).path, public)


def test_pack_ships_only_what_the_device_runs_and_the_device_checks_before_writing(tmp_path, bundle_dir, capsys):
    """`bundle pack --for` a device's config: what it runs and the acceptance set under a manifest that still
    verifies.
    A device refuses, before writing anything: an archive without its variant, one signed by another
    key, and a member the manifest does not list."""
    import tarfile

    from edge.cli import main
    from edge.formats.signing import generate_key

    full, slim, pi = tmp_path / "full.tar", tmp_path / "pi.tar", tmp_path / "rpi5.tar"
    pack(bundle_dir, full)
    # the shipped rpi5 config times every TFLite variant on the board (variant auto on litert): those, no ONNX
    assert (
        main(["bundle", "pack", str(bundle_dir), "--out", str(pi), "--for", str(ROOT / "firmware_config/rpi5.yaml")])
        == 0
    )
    with tarfile.open(pi) as tar:
        assert sorted(tar.getnames()) == sorted(["manifest.json", "acceptance.npz", *TFLITE_FILES])
    int8_only = tmp_path / "int8.yaml"  # a board that pins its variant gets that one alone
    int8_only.write_text((ROOT / "firmware_config/rpi5.yaml").read_text().replace("variant: auto", "variant: int8"))
    assert main(["bundle", "pack", str(bundle_dir), "--out", str(slim), "--for", str(int8_only)]) == 0
    print(f"archive: every variant {full.stat().st_size / 1e6:.1f} MB, --for int8 {slim.stat().st_size / 1e6:.1f} MB")
    with tarfile.open(slim) as tar:
        assert tar.getnames() == ["manifest.json", "acceptance.npz", "int8.tflite"]
    bundle = unpack(slim, tmp_path / "pi", max_bytes=10**9, variant="int8")
    assert bundle.variant_names() == ["int8"] and bundle.manifest.probes == {}
    bundle.verify()
    assert slim.stat().st_size < full.stat().st_size / 4
    with pytest.raises(BundleError, match="has no 'onnx' variant, which this device's model.variant asks for"):
        unpack(slim, tmp_path / "jetson", max_bytes=10**9, variant="onnx")
    assert not (tmp_path / "jetson").exists()
    # signed by another key: refused on the manifest alone
    public = generate_key(tmp_path / "fleet.pem")
    generate_key(tmp_path / "other.pem")
    pack(bundle_dir, tmp_path / "forged.tar", key=tmp_path / "other.pem", variants=["int8"])
    with pytest.raises(BundleError, match="signature check failed"):
        unpack(tmp_path / "forged.tar", tmp_path / "forged", max_bytes=10**9, public_key=public)
    assert not (tmp_path / "forged").exists()
    # a file the manifest does not vouch for
    extra = tmp_path / "extra.tar"
    with tarfile.open(slim) as source, tarfile.open(extra, "w") as tar:
        for member in source.getmembers():
            tar.addfile(member, source.extractfile(member))
        tar.add(bundle_dir / "float32.tflite", arcname="float32.tflite")
    with pytest.raises(BundleError, match="'float32.tflite' is not listed in the manifest"):
        unpack(extra, tmp_path / "extra", max_bytes=10**9)
    assert not (tmp_path / "extra").exists()
    assert main(["bundle", "pack", str(bundle_dir), "--out", str(tmp_path / "x.tar"), "--variants", "int4"]) == 2
    assert "no variant 'int4'" in capsys.readouterr().err
