"""Every kind of configuration error names the file, the key path, the bad value and what is allowed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from edge.cli import EXIT_CONFIG_ERROR, EXIT_NO_PERMISSION, main
from edge.config import json_schema, load_config, masked
from edge.errors import ConfigError
from tests.support import ROOT, board

DEVICES = ["rpi4", "rpi5", "jetson-orin-nano", "x86-dev"]


@pytest.mark.parametrize("device", DEVICES)
def test_shipped_configs_are_valid(device: str):
    path = ROOT / "firmware_config" / f"{device}.yaml"
    config = load_config(path)
    schema = json.loads((ROOT / "firmware_config" / "config.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    if device.startswith("rpi"):
        assert (config.model.backend, config.model.variant) == ("litert", "auto")  # timed on the board
    if device.startswith("jetson"):
        assert (config.model.backend, config.model.variant) == ("onnxruntime", "onnx")
    # a board's file says only what differs from the code's defaults: a default written again there would
    # be a second place to change
    written = yaml.safe_load(path.read_text())
    assert written == config.model_dump(mode="json", exclude_defaults=True)
    # and `smartbin config show <board>` prints every setting in force
    show = subprocess.run(
        [sys.executable, "-m", "edge.cli", "config", "show", device], cwd=ROOT, capture_output=True, text=True
    )
    assert show.returncode == 0, show.stderr
    assert yaml.safe_load(show.stdout) == masked(config)


def test_shipped_schema_is_current():
    shipped = json.loads((ROOT / "firmware_config" / "config.schema.json").read_text())
    assert shipped == json_schema(), "regenerate firmware_config/config.schema.json from edge.config.json_schema()"


def base() -> dict:
    return board()


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "bin.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def edit(change) -> dict:
    data = base()
    change(data)
    return data


CASES = [
    (
        "unknown key",
        edit(lambda d: d["model"].update(treads=2)),
        ["model.treads: unknown key (allowed here: bundle, backend, variant, threads, delegate, top_k)"],
    ),
    (
        "unknown top-level key",
        edit(lambda d: d.update(camera="csi://0")),
        ["camera: unknown key (allowed here: device_id, model, source"],
    ),
    ("missing key", edit(lambda d: d.pop("source")), ["source: required key is missing"]),
    (
        "bad enum",
        edit(lambda d: d["model"].update(backend="coral")),
        [
            "model.backend: 'coral' is not valid: must be one of 'auto', 'litert', 'tflite_runtime', 'tensorflow' or "
            "'onnxruntime'"
        ],
    ),
    ("wrong type", edit(lambda d: d["mqtt"].update(port="eighteen")), ["mqtt.port: 'eighteen' is not valid"]),
    (
        "out of range",
        edit(lambda d: d["decision"].update(min_confidence=1.5)),
        ["decision.min_confidence: 1.5 is not valid: Input should be less than or equal to 1"],
    ),
    (
        "bad bin",
        edit(lambda d: d["decision"].update(default_bin="compost")),
        [
            "decision.default_bin: 'compost' is not valid: must be one of 'other', 'kitchen', 'recyclable' or "
            "'hazardous'"
        ],
    ),
    (
        "cross-field",
        edit(lambda d: d["decision"].update(min_votes=9, vote_frames=3)),
        ["decision: ", "min_votes must not exceed vote_frames"],
    ),
    (
        "roi outside frame",
        edit(lambda d: d["source"].update(roi={"x": 0.5, "y": 0, "w": 0.8, "h": 1})),
        ["source.roi: ", "region must lie inside the frame"],
    ),
    (
        "bad source",
        edit(lambda d: d["source"].update(uri="ftp://cam")),
        ["source.uri: ", "unknown source (allowed: csi://, v4l2://"],
    ),
    ("bad device id", edit(lambda d: d.update(device_id="bin/1")), ["device_id: 'bin/1' is not valid"]),
    (
        "the fleet's topic level as a device id",
        edit(lambda d: d.update(device_id="_fleet")),
        ["device_id: '_fleet' is not valid", "the fleet's own topic level"],
    ),
    (
        "wildcard prefix",
        edit(lambda d: d["mqtt"].update(topic_prefix="bins/#")),
        ["mqtt.topic_prefix: 'bins/#' is not valid", "no '#', '+'"],
    ),
    (
        "page tls without its certificate",
        edit(lambda d: d.update(web={"tls": {"enabled": True}})),
        ["web: ", "tls.enabled needs the page's own certificate: tls.cert_file and tls.key_file"],
    ),
    ("yaml syntax", "device_id: [unclosed\n", ["not valid YAML (line 2, column 1)"]),
    ("not a mapping", "- just\n- a list\n", ["expected a mapping of keys at the top level"]),
    (
        "several at once",
        edit(lambda d: (d["model"].update(threads=0), d["mqtt"].update(keepalive=1))),
        ["model.threads: 0 is not valid", "mqtt.keepalive: 1 is not valid"],
    ),
]


@pytest.mark.parametrize("name, data, fragments", CASES, ids=[c[0] for c in CASES])
def test_schema_errors_name_file_key_value_and_allowed(tmp_path: Path, name, data, fragments):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_password_comes_from_the_environment_and_is_never_shown(tmp_path: Path, monkeypatch, capsys):
    data = base()
    data["mqtt"].update(username="bin01", password_env="BIN_PASS")
    path = write(tmp_path, data)
    monkeypatch.setenv("BIN_PASS", "hunter2-secret")
    config = load_config(path)
    assert config.mqtt.password() == "hunter2-secret"
    assert "hunter2" not in json.dumps(masked(config))
    assert main(["config", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "password: '***'" in out and "password_env: BIN_PASS" in out
    monkeypatch.delenv("BIN_PASS")
    with pytest.raises(ConfigError, match="environment variable BIN_PASS is not set"):
        config.mqtt.password()
    data["mqtt"]["password"] = "inline"  # secrets never in the YAML
    with pytest.raises(ConfigError, match="mqtt.password: unknown key"):
        load_config(write(tmp_path, data))


def test_password_file(tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    data = base()
    data["mqtt"].update(username="bin01", password_file=str(secret))
    assert load_config(write(tmp_path, data)).mqtt.password() == "s3cret"


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path):
    data = base()
    data["model"]["bundle"] = "models/current"
    data["outbox"]["path"] = "state/outbox.sqlite"
    config = load_config(write(tmp_path, data))
    assert config.model.bundle == tmp_path / "models" / "current"
    assert config.outbox.path == tmp_path / "state" / "outbox.sqlite"


def test_cli_exits_with_the_config_error_code_without_traceback(tmp_path: Path):
    path = write(tmp_path, edit(lambda d: d["model"].update(treads=2)))
    for args in (["config", "check", str(path)], ["run", "--config", str(path)]):
        result = subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == EXIT_CONFIG_ERROR == 78
        assert "model.treads: unknown key" in result.stderr and "Traceback" not in result.stderr
    # a valid config whose bundle is not there (yet): a restart may fix that (a model copied in), so 75,
    # which systemd restarts, never 78 (outside systemd at once, without the back-off's wait)
    good = write(tmp_path, base())
    result = subprocess.run(
        [sys.executable, "-m", "edge", "--config", str(good)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 75 and "bundle folder not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_this_user_may_not_read_is_a_permission_error_not_a_config_error(tmp_path: Path):
    """`smartbin config check /etc/smartbin/config.yaml` without sudo: the installer's 0640 root:smartbin file.
    As root the suite drops the capability that reads any file (what a user without sudo lacks)."""
    path = write(tmp_path, base())
    path.chmod(0o600)
    as_user = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    command = [sys.executable, "-m", "edge.cli", "config", "check", str(path)]
    assert subprocess.run(command, capture_output=True, cwd=ROOT).returncode == 0  # the control: it is valid
    path.chmod(0o000)
    result = subprocess.run([*as_user, *command], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == EXIT_NO_PERMISSION == 77, result.stderr
    assert "permission denied" in result.stderr and "sudo" in result.stderr and "Traceback" not in result.stderr


def test_backend_and_variant_must_fit_each_other(tmp_path: Path):
    """The rule comes from the runtime's registry: a TFLite interpreter cannot run the ONNX file."""
    path = write(tmp_path, edit(lambda d: d["model"].update(backend="litert", variant="onnx")))
    with pytest.raises(ConfigError, match="backend 'litert' cannot run variant 'onnx'"):
        load_config(path)
    assert load_config(write(tmp_path, edit(lambda d: d["model"].update(backend="onnxruntime", variant="onnx_int8"))))


def test_backend_for_names_what_is_missing_instead_of_raising_anything_else():
    from edge.errors import SmartbinError
    from edge.runtime import backend_for

    assert backend_for("int8", "auto", have=["tflite_runtime", "onnxruntime"]) == "tflite_runtime"
    assert backend_for("onnx_int8", "auto", have=["litert", "onnxruntime"]) == "onnxruntime"
    with pytest.raises(SmartbinError, match="no installed backend runs the int8 variant"):
        backend_for("int8", "auto", have=["onnxruntime"])
    with pytest.raises(SmartbinError, match="unknown backend 'tpu'"):
        backend_for("int8", "tpu")


def test_threads_auto_is_every_core_up_to_four(tmp_path: Path):
    import os

    from edge.models.build import inference_threads
    from edge.runtime import default_threads

    cores = os.cpu_count() or 1
    auto = load_config(write(tmp_path, edit(lambda d: d["model"].update(threads="auto"))))
    assert inference_threads(auto) is None  # the runtime's one rule resolves it
    assert default_threads() == max(1, min(4, cores))
    assert inference_threads(load_config(write(tmp_path, edit(lambda d: d["model"].update(threads=3))))) == 3
    with pytest.raises(ConfigError, match="model.threads"):
        load_config(write(tmp_path, edit(lambda d: d["model"].update(threads=0))))


def test_the_default_device_id_is_the_machines_own(tmp_path: Path, monkeypatch):
    """No device_id in the file: the hostname; a stock hostname many boards share: bin-<machine id>."""
    import socket

    import edge.system.identity as identity

    path = write(tmp_path, base())
    monkeypatch.setattr(socket, "gethostname", lambda: "kitchen.local")
    assert load_config(path).device_id == "kitchen"
    (tmp_path / "machine-id").write_text("3f2a9c1e" + "0" * 24 + "\n")
    monkeypatch.setattr(identity, "MACHINE_ID_FILES", (tmp_path / "machine-id",))
    monkeypatch.setattr(socket, "gethostname", lambda: "raspberrypi")
    assert load_config(path).device_id == "bin-3f2a9c1e"
    for shipped in sorted((ROOT / "firmware_config").glob("*.yaml")):
        assert "device_id" not in yaml.safe_load(shipped.read_text(encoding="utf-8")), shipped


def test_every_config_section_says_how_a_reload_treats_it():
    """A section added to Config without a place here would be ignored by SIGHUP without a word."""
    from edge.config import Config
    from edge.daemon.reload import AT_RESTART, FIXED, LIVE, NOT_OURS

    places = [set(LIVE), {n for n in FIXED if "." not in n}, set(NOT_OURS), set(AT_RESTART)]
    for name in Config.model_fields:
        assert sum(name in place for place in places) == 1, f"{name}: live, fixed, not ours or at restart?"
    for dotted in FIXED:
        section, _, field = dotted.partition(".")
        assert section in Config.model_fields and (
            not field or field in Config.model_fields[section].annotation.model_fields
        )
