"""Plugin discovery: entry points, broken plugins, the method catalog."""
import json
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from wsolctl import plugins
from wsolctl.errors import PluginWarning, UnknownPlugin


def test_builtins_register_through_entry_points():
    assert {"cam", "gradcam"} <= set(plugins.registered("methods"))
    assert {"synthetic-glas", "synthetic-camelyon", "folds"} <= set(plugins.registered("datasets"))
    assert {"resnet50-wsol", "vgg16-wsol", "inceptionv3-wsol", "resnet18-wsol"} <= set(plugins.registered("backbones"))
    assert plugins.info("methods", "cam").package == "wsolctl"


def test_broken_plugin_is_skipped_with_a_warning(monkeypatch):
    good = dict(plugins.registered("methods"))
    broken = EntryPoint("broken", "no_such_module_xyz:Method", "wsolctl.methods")
    monkeypatch.setattr(plugins, "registered", lambda kind: {**good, "broken": broken} if kind == "methods" else {})
    plugins.load.cache_clear()
    try:
        with pytest.warns(PluginWarning, match="broken.*failed to import"):
            loaded = plugins.load_all("methods")
        assert "broken" not in loaded and {"cam", "gradcam"} <= set(loaded)
    finally:
        plugins.load.cache_clear()


def test_unknown_name_suggests():
    with pytest.raises(UnknownPlugin, match="did you mean 'gradcam'"):
        plugins.load("methods", "grad-cam")


def test_any_timm_model_is_a_backbone_and_typos_are_caught():
    backbone = plugins.load("backbones", "resnet10t")
    assert backbone.Params().output_stride == 32
    with pytest.raises(UnknownPlugin, match="neither a wsolctl plugin, a timm model nor hf-hub:org/name"):
        plugins.load("backbones", "resnet18-wsl")


@pytest.mark.slow
def test_methods_json_lists_kind_package_params():
    result = subprocess.run([sys.executable, "-m", "wsolctl", "methods", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["cam"]["kind"] == "bottom-up" and rows["gradcam"]["kind"] == "top-down"
    assert rows["gradcam"]["params"] == {"layer": None}
    assert rows["cam"]["package"].startswith("wsolctl ")
    table = subprocess.run([sys.executable, "-m", "wsolctl", "methods"], capture_output=True, text=True)
    assert "gradcam" in table.stdout and "top-down" in table.stdout


def test_plugin_api_version_is_checked(monkeypatch):
    from wsolctl.methods.base import API_VERSION

    plugins.load.cache_clear()
    cls = plugins.load("methods", "cam")
    monkeypatch.setattr(cls, "api_version", 99)
    plugins.load.cache_clear()
    try:
        with pytest.raises(UnknownPlugin, match="targets plugin API version 99"):
            plugins.load("methods", "cam")
        # the refusal is about the version only: the same class with the right version loads again
        monkeypatch.setattr(cls, "api_version", API_VERSION)
        plugins.load.cache_clear()
        assert plugins.load("methods", "cam") is cls
    finally:
        plugins.load.cache_clear()


def test_the_registry_keeps_names_in_its_own_map():
    cam = plugins.load("methods", "cam")
    assert "name" not in vars(cam)  # the class is left as imported
    assert plugins.name_of(cam) == cam.name == "cam"  # the plugin's own code may still say cls.name

    class Variant(cam):  # an unregistered subclass inherits the name, as a class attribute would
        pass

    class Declared(cam):  # a plugin that declares its name keeps it
        name = "declared"

    assert plugins.name_of(Variant) == Variant.name == "cam"
    assert plugins.name_of(Declared) == Declared.name == "declared"
    method = cam(cam.Params())
    assert plugins.name_of(method) == method.name == "cam"
    method.name = "renamed"  # an instance's own attribute comes first
    assert plugins.name_of(method) == "renamed" and plugins.name_of(cam) == "cam"
    assert plugins.name_of(object()) == ""
