"""cluster.yaml passes the same checks `ray up` runs before touching a provider (design/ray.md §7):
``prepare_config`` + ``validate_config`` (private API, pinned ray==2.60.0). Offline; no Ray started."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml
from jsonschema import ValidationError
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = pathlib.Path(__file__).resolve().parents[2] / "cluster.yaml"


def check(cfg: dict) -> dict:
    cfg = prepare_config(copy.deepcopy(cfg))
    validate_config(cfg)
    return cfg


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_is_valid(raw):
    cfg = check(raw)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0, "signaling": 1}
    assert types["head"]["max_workers"] == 0  # prepare_config: the head type never scales
    media = types["media"]["resources"]
    assert media["media_slots"] == media["CPU"] > 0  # one media worker per core
    assert any("pip install" in c and "studyrooms" in c for c in cfg["setup_commands"])
    assert cfg["file_mounts"]["~/studyrooms"] == "."


def test_the_udp_range_and_security_group_are_documented():
    text = CLUSTER_YAML.read_text()
    assert "40000-49999" in text and "SECURITY GROUP" in text and "UDP" in text


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda c: c.update(max_worker=3), ValidationError),  # top-level typo
        (lambda c: c["available_node_types"]["media"].update(min_worker=1), ValidationError),
        (lambda c: c["available_node_types"]["media"]["resources"].update(media_slots=0.5), ValidationError),
        (lambda c: c["available_node_types"]["media"].pop("resources"), ValidationError),
        (lambda c: c.update(head_node_type="nope"), ValueError),
    ],
    ids=["typo-top", "typo-node-type", "fractional-slots", "no-resources", "bad-head-type"],
)
def test_mistakes_are_caught(raw, mutate, error):
    cfg = copy.deepcopy(raw)
    mutate(cfg)
    with pytest.raises(error):
        check(cfg)
