from pathlib import Path

import pytest

from spd_bench.config import ORGANISM_TRAIN, RunConfig, load_yaml, make_config, parse_set
from spd_bench.errors import UserError


def test_defaults_are_the_papers_for_hub_models():
    config = make_config({"model": "Qwen/Qwen2.5-0.5B-Instruct"})
    assert (config.train.lora_r, config.train.lora_alpha, config.train.lora_dropout) == (8, 8, 0.05)
    assert config.train.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (config.train.lr, config.train.weight_decay, config.train.schedule, config.train.epochs) == (1e-5, 0.01, "cosine", 5)
    assert (config.decoding.temperature, config.decoding.top_p) == (0.7, 0.95)


def test_organism_gets_its_preset_unless_training_is_set():
    assert make_config({}).train.lr == ORGANISM_TRAIN["lr"]
    assert make_config({"train": {"lr": 0.5}}).train.lr == 0.5
    assert make_config({"train": {"lr": 0.5}}).train.epochs == ORGANISM_TRAIN["epochs"]


def test_flags_override_yaml_and_values_are_coerced():
    config = make_config({"seeds": [1], "limit": 5}, {"seeds": ["4", "5"], "limit": None})
    assert config.seeds == [4, 5]
    assert config.limit == 5


def test_hash_is_stable_and_ignores_where_files_go():
    a = make_config({"model": "tiny-llama"}, {"output_dir": "x", "cache_dir": "y"})
    b = make_config({"model": "tiny-llama"})
    assert a.hash() == b.hash()
    assert a.hash() != make_config({"model": "tiny-llama", "seeds": [9]}).hash()
    assert a.hash() == make_config({"model": "tiny-llama", "eval_batch_size": 7}).hash()  # greedy: same numbers
    assert a.hash() != make_config({"model": "tiny-llama", "gen_batch_size": 7}).hash()  # sampling is seeded per batch


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": {"lr": "fast"}}, "train.lr: expected a number"),
        ({"seeds": ["one"]}, "seeds[0]: expected an integer"),
        ({"trian": {}}, "did you mean train"),
        ({"allow_code_execution": "maybe"}, "expected true or false"),
    ],
)
def test_wrong_types_and_unknown_fields_fail_clearly(data, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_config(data)


def test_set_parses_nested_values():
    config = make_config(parse_set(["train.lr=1e-4", "decoding.top_k=20", "method_options.spd.layers=[0, 1]"]))
    assert config.train.lr == 1e-4 and config.decoding.top_k == 20
    assert config.method_options == {"spd": {"layers": [0, 1]}}
    with pytest.raises(UserError, match="FIELD=VALUE"):
        parse_set(["nonsense"])


def test_malformed_yaml_names_the_line(tmp_path: Path):
    bad = tmp_path / "run.yaml"
    bad.write_text("model: organism\nseeds: [1, 2\n")
    with pytest.raises(UserError, match=r"malformed YAML .* line"):
        load_yaml(bad)
    with pytest.raises(UserError, match="cannot read config"):
        load_yaml(tmp_path / "missing.yaml")


def test_default_run_config_matches_the_cpu_default():
    config = RunConfig()
    assert config.model == "organism" and config.seeds == [1, 2, 3]
