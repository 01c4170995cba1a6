"""TaskTranslator: shapes, embedding arithmetic, attention mass, and strict loading of official EgoT2-s layouts."""
import math
import re

import pytest
import torch

from egot2.translation import (
    TRANSLATOR_VARIANTS,
    TaskTranslator,
    apply_renames,
    build_translator,
    official_translator_key_map,
    translator_state_from_official,
    translator_state_to_official,
)
from tests.manifests import load_manifest

SUB_MODEL = re.compile(r"^\w+_model\.")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _manifest(variant):
    return load_manifest(TRANSLATOR_VARIANTS[variant].manifest)


def _official_translator_state(manifest):
    """Random tensors under the manifest's translator keys (``model.`` stripped, sub-models left out)."""
    state = {}
    for name, shape, dtype in manifest["keys"]:
        if not name.startswith("model."):
            continue  # criterion.weight, lossAV.*: task-level keys
        key = name[len("model."):]
        if SUB_MODEL.match(key):
            continue
        state[key] = torch.randn(shape, dtype=getattr(torch, dtype))
    for alias, original in manifest["aliases"].items():
        state[alias[len("model."):]] = state[original[len("model."):]].clone()
    return state


def _config_from_shapes(state, layout):
    """Read dim / layers / ff width / head sizes off the official tensors."""
    encoder = layout.encoder
    layers = {int(m.group(1)) for key in state if (m := re.match(rf"{encoder}\.layers\.(\d+)\.", key))}
    return dict(dim=state["ln.weight"].shape[0], num_layers=len(layers),
                ff_dim=state[f"{encoder}.layers.0.linear1.weight"].shape[0],
                heads=[state[f"{head}.weight"].shape[0] for head in layout.heads])


def _tokens_for(translator, batch=2, tokens_per_source=None):
    tokens = {}
    for name, in_dim in translator.sources:
        count = (tokens_per_source or {}).get(name, 3)
        tokens[name] = torch.randn(batch, count, translator.dim if in_dim is None else in_dim)
    return tokens


# Tokens per source as the official models produce them (manifest feature_outputs, batch 2, T = D = 8, N = 2).
TOKEN_COUNTS = {
    "ttm_2task": {"ttm": 8, "lam": 8},
    "ttm_3task": {"ttm": 8, "lam": 8, "asd": 8},
    "asd_3task": {"asd": 8, "ttm": 8, "lam": 8},
    "pnr": {"pnr": 16, "oscc": 16, "slow": 8, "fast": 8},
    "oscc": {"pnr": 16, "oscc": 16, "slow": 8, "fast": 8},
    "ar": {"slow": 8, "fast": 8, "pnr": 16, "oscc": 16},
    "lta_4task": {"pnr": 2, "oscc": 2, "action": 2, "lta": 2},
    "lta_2task": {"action": 2, "lta": 2},
}


def _output_shapes(output):
    return [tuple(o.shape) for o in output] if isinstance(output, list) else tuple(output.shape)


@pytest.mark.parametrize("variant", sorted(TRANSLATOR_VARIANTS))
def test_official_translator_layout_loads_strictly_and_exports_back(variant):
    manifest = _manifest(variant)
    official = _official_translator_state(manifest)
    layout = TRANSLATOR_VARIANTS[variant].layout

    # The variant's arguments agree with the tensors and with the original configuration.
    kwargs = TRANSLATOR_VARIANTS[variant].kwargs
    shapes = _config_from_shapes(official, layout)
    assert shapes == dict(dim=kwargs["dim"], num_layers=kwargs["num_layers"], ff_dim=kwargs["ff_dim"],
                          heads=list(kwargs["heads"]))
    config = manifest["original_config"]
    hhi_args = {**config.get("defaults_used", {}), **config.get("non_default", {})}
    if "hidden_dim" in hhi_args:
        assert (hhi_args["hidden_dim"], hhi_args["num_layers"], hhi_args["num_heads"], hhi_args["dropout"]) == (
            kwargs["dim"], kwargs["num_layers"], kwargs["num_heads"], kwargs["dropout"])
    for key, argument in [("MODEL.TRANSLATION_INPUT_FEATURES", "dim"), ("MODEL.TRANSLATION_LAYERS", "num_layers"),
                          ("MODEL.TRANSLATION_HEADS", "num_heads"), ("MODEL.TRANSLATION_DROPOUT", "dropout"),
                          ("MODEL.FEAT_DROPOUT_RATE", "token_dropout")]:
        if key in hhi_args:
            assert kwargs[argument] == hhi_args[key], key

    translator = build_translator(variant)
    ours = translator_state_from_official(official, variant)
    translator.load_state_dict(ours, strict=True)
    assert torch.equal(translator.ln.weight, official["ln.weight"])

    exported = translator_state_to_official(translator.state_dict(), variant)
    assert list(exported) == list(official), "exported keys must follow the official names and order"
    for key, value in official.items():
        assert torch.equal(exported[key], value), key
    for alias, original in manifest["aliases"].items():
        assert torch.equal(exported[alias[len("model."):]], exported[original[len("model."):]])

    translator.eval()
    output = translator(_tokens_for(translator, batch=2, tokens_per_source=TOKEN_COUNTS[variant]))
    expected = {
        "ttm_2task": (2, 2), "ttm_3task": (2, 2), "asd_3task": (2, 8, 256), "pnr": (2, 16), "oscc": (2, 2),
        "ar": [(2, 115), (2, 478)], "lta_4task": [(2, 20, 115), (2, 20, 478)],
        "lta_2task": [(2, 20, 115), (2, 20, 478)],
    }[variant]
    assert _output_shapes(output) == expected
    if variant == "asd_3task":  # the task flattens the ASD positions to (B*D, d) for lossAV.FC
        assert list(output.reshape(-1, output.shape[-1]).shape) == manifest["feature_outputs"]["features"][
            "translator_output_asd_positions"]


def test_load_map_rejects_a_diverging_layernorm_copy():
    manifest = _manifest("ar")
    official = _official_translator_state(manifest)
    official["linear_head2.0.weight"] = official["linear_head2.0.weight"] + 1
    with pytest.raises(ValueError, match="linear_head2.0.weight"):
        translator_state_from_official(official, "ar")


def test_key_map_pairs_are_plain_regex_renames():
    pairs = official_translator_key_map("pnr", "load")
    renamed = apply_renames({"proj3_fast.weight": 1, "transformer.layers.0.norm1.bias": 2, "pe": 3,
                             "linear_head.0.weight": 4, "linear_head.1.bias": 5}, pairs)
    assert renamed == {"proj.fast.weight": 1, "encoder.layers.0.norm1.bias": 2, "pos_embed.pe": 3, "heads.0.bias": 5}
    save = official_translator_key_map("ttm_3task", "save")
    assert apply_renames({"proj.asd.bias": 1, "head_norm.weight": 2, "heads.0.weight": 3, "task_embed": 4}, save) == {
        "proj_asd.bias": 1, "linear_head.0.weight": 2, "linear_head.1.weight": 3, "task_embed": 4}
    with pytest.raises(ValueError, match="direction"):
        official_translator_key_map("pnr", "sideways")
    with pytest.raises(ValueError, match="unknown translator variant"):
        build_translator("ttm_9task")


@pytest.mark.parametrize("style", ["hhi", "hoi"])
@pytest.mark.parametrize("num_sources", [2, 3, 4, 6])
def test_output_shapes_for_any_number_of_sources(style, num_sources):
    widths = [256, 64, 32, 48, 16, None][:num_sources]
    sources = [(f"task{i}", width) for i, width in enumerate(widths)]
    counts = {f"task{i}": 2 + i for i in range(num_sources)}
    extra = dict(max_tokens=sum(counts.values())) if style == "hoi" else {}
    translator = TaskTranslator(sources, dim=32, num_layers=2, num_heads=4, ff_dim=64, style=style, heads=[5, 7],
                                **extra).eval()
    tokens = _tokens_for(translator, batch=3, tokens_per_source=counts)
    verb_logits, noun_logits = translator(tokens)
    assert verb_logits.shape == (3, 5) and noun_logits.shape == (3, 7)
    assert translator.forward_tokens(tokens).shape == (3, sum(counts.values()), 32)
    # A list in source order is the same input as the dict.
    torch.testing.assert_close(translator(list(tokens.values()))[0], verb_logits)
    logits, attention_mass = translator(tokens, return_attention=True)
    assert attention_mass.shape == (3, num_sources)


def _hand_embedding_hhi(translator, tokens):
    parts = []
    for (name, _), task_id in zip(translator.sources, translator.task_ids):
        projected = translator.ln(translator.proj[name](tokens[name]))
        positions = translator.pos_embed.pe[: tokens[name].shape[1], 0]
        parts.append(projected + translator.task_embed[0, task_id] + positions)
    return torch.cat(parts, dim=1)


def test_hhi_embedding_restarts_positions_per_source_and_uses_configured_task_ids():
    translator = build_translator("asd_3task", dim=16, num_heads=2, ff_dim=32).eval()
    assert translator.task_embed.shape == (1, 3, 16) and translator.pos_embed.pe.shape == (1000, 1, 16)
    tokens = _tokens_for(translator, batch=2, tokens_per_source={"asd": 4, "ttm": 3, "lam": 5})
    sequence, spans = translator.embed(tokens)
    assert spans == [(0, 4), (4, 7), (7, 12)]
    torch.testing.assert_close(sequence, _hand_embedding_hhi(translator, tokens))
    # Source order ASD, TTM, LAM uses task-embedding rows 2, 0, 1: swapping rows must change the ASD part.
    with torch.no_grad():
        translator.task_embed[0, 2] += 1.0
    moved, _ = translator.embed(tokens)
    torch.testing.assert_close(moved[:, :4], sequence[:, :4] + 1.0)
    torch.testing.assert_close(moved[:, 4:], sequence[:, 4:])


def test_hoi_embedding_uses_one_learned_table_over_the_whole_sequence():
    translator = TaskTranslator([("slow", 12), ("fast", 6)], dim=8, num_heads=2, ff_dim=16, style="hoi",
                                max_tokens=5, token_dropout=0.5, heads=[3]).eval()
    assert translator.pos_embed.pe.shape == (1, 5, 8)
    tokens = {"slow": torch.randn(2, 2, 12), "fast": torch.randn(2, 3, 6)}
    sequence, _ = translator.embed(tokens)
    expected = translator.ln(torch.cat([translator.proj["slow"](tokens["slow"]),
                                        translator.proj["fast"](tokens["fast"])], dim=1)) + translator.pos_embed.pe
    torch.testing.assert_close(sequence, expected)
    with pytest.raises(ValueError, match="max_tokens=5"):
        translator({"slow": torch.randn(2, 4, 12), "fast": torch.randn(2, 3, 6)})


def test_mean_pooling_and_shared_versus_separate_head_norm():
    for style, extra in [("hoi", dict(max_tokens=6)), ("hhi", {})]:
        translator = TaskTranslator([("a", 4), ("b", 4)], dim=8, num_heads=2, ff_dim=16, style=style, heads=[3],
                                    **extra).eval()
        with torch.no_grad():
            translator.ln.weight.uniform_(0.5, 1.5)
        tokens = {"a": torch.randn(2, 3, 4), "b": torch.randn(2, 3, 4)}
        pooled = translator.forward_tokens(tokens).mean(dim=1)
        norm = translator.ln if style == "hoi" else translator.head_norm
        torch.testing.assert_close(translator(tokens), translator.heads[0](norm(pooled)))
        has_separate = any(key.startswith("head_norm.") for key in translator.state_dict())
        assert has_separate == (style == "hhi")


def test_attention_path_matches_the_stock_encoder_and_masses_sum_to_one():
    translator = build_translator("ttm_3task", dim=32, num_layers=2, ff_dim=64).eval()
    tokens = _tokens_for(translator, batch=3, tokens_per_source={"ttm": 5, "lam": 5, "asd": 2})
    with torch.no_grad():
        logits = translator(tokens)
        logits_with_attention, mass = translator(tokens, return_attention=True)
    torch.testing.assert_close(logits_with_attention, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mass.sum(dim=1), torch.ones(3))
    assert (mass > 0).all()
    # With zero query/key projections every score is equal, so each token gets the same weight and a source's
    # mass is its share of the tokens.
    single = TaskTranslator([("a", 4), ("b", 4)], dim=4, num_layers=1, num_heads=1, ff_dim=8, dropout=0.0,
                            pos_dropout=0.0).eval()
    with torch.no_grad():
        attention = single.encoder.layers[0].self_attn
        attention.in_proj_weight.zero_()
        attention.in_proj_bias.zero_()
    _, uniform_mass = single({"a": torch.randn(1, 3, 4), "b": torch.randn(1, 1, 4)}, return_attention=True)
    torch.testing.assert_close(uniform_mass, torch.tensor([[0.75, 0.25]]))


def test_pool_none_returns_the_selected_source_positions():
    translator = build_translator("asd_3task", dim=16, num_heads=2, ff_dim=32).eval()
    tokens = _tokens_for(translator, batch=2, tokens_per_source={"asd": 4, "ttm": 4, "lam": 4})
    selected = translator(tokens)
    torch.testing.assert_close(selected, translator.forward_tokens(tokens)[:, :4])
    selected.sum().backward()
    without_gradient = {name for name, parameter in translator.named_parameters() if parameter.grad is None}
    assert without_gradient == {"head_norm.weight", "head_norm.bias", "heads.0.weight", "heads.0.bias"}
    frozen = {name for name, parameter in translator.named_parameters() if not parameter.requires_grad}
    assert frozen == without_gradient
    with pytest.raises(ValueError, match="select_source"):
        TaskTranslator([("a", 4)], dim=8, num_heads=2, pool="none")


def test_stacked_heads_split_into_verbs_and_nouns():
    translator = TaskTranslator([("action", None), ("lta", None)], dim=16, num_heads=2, ff_dim=32, style="hoi",
                                max_tokens=4, head_norm="none", head_dropout=0.5, heads=[5] * 3, stack_heads=True,
                                output_split=[2, 3]).eval()
    tokens = {"action": torch.randn(2, 2, 16), "lta": torch.randn(2, 2, 16)}
    verbs, nouns = translator(tokens)
    assert verbs.shape == (2, 3, 2) and nouns.shape == (2, 3, 3)
    pooled = translator.forward_tokens(tokens).mean(dim=1)
    torch.testing.assert_close(nouns[:, 1], translator.heads[1](pooled)[:, 2:])
    with pytest.raises(ValueError, match="add up"):
        TaskTranslator([("a", 4)], dim=8, num_heads=2, heads=[5, 5], stack_heads=True, output_split=[2, 2])


def test_xavier_init_covers_projections_positions_and_encoder_but_not_heads():
    translator = TaskTranslator([("pnr", 300), ("lta", 200)], dim=64, num_heads=4, ff_dim=128, style="hoi",
                                max_tokens=4, head_norm="none", heads=[50], init="xavier")
    assert translator.proj["pnr"].weight.abs().max() <= math.sqrt(6 / (300 + 64))
    assert translator.pos_embed.pe.abs().max() <= math.sqrt(6 / (4 * 64 + 64))  # randn would exceed this
    assert translator.encoder.layers[0].linear1.weight.abs().max() <= math.sqrt(6 / (64 + 128))
    # Heads keep PyTorch's default (bound 1/sqrt(fan_in)); xavier would allow up to sqrt(6/114) ~ 0.23.
    assert translator.heads[0].weight.abs().max() <= 1 / math.sqrt(64)


def test_sinusoidal_table_matches_the_formula():
    translator = TaskTranslator([("a", 4)], dim=8, num_heads=2, max_len=50)
    position = torch.arange(50, dtype=torch.float64)[:, None]
    frequency = torch.exp(torch.arange(0, 8, 2, dtype=torch.float64) * (-math.log(10000.0) / 8))
    expected = torch.zeros(50, 8, dtype=torch.float64)
    expected[:, 0::2], expected[:, 1::2] = torch.sin(position * frequency), torch.cos(position * frequency)
    torch.testing.assert_close(translator.pos_embed.pe[:, 0].double(), expected, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="sinusoidal table holds 50"):
        translator({"a": torch.randn(1, 51, 4)})


def test_every_trainable_parameter_gets_a_gradient():
    translator = build_translator("ttm_2task", dim=16, num_heads=2, ff_dim=32)
    loss = translator(_tokens_for(translator, batch=2)).logsumexp(dim=1).sum()
    loss.backward()
    missing = [name for name, parameter in translator.named_parameters() if parameter.grad is None]
    assert missing == []


def test_bad_inputs_name_the_source():
    translator = build_translator("ttm_2task", dim=16, num_heads=2, ff_dim=32)
    with pytest.raises(ValueError, match=r"missing \['lam'\]"):
        translator({"ttm": torch.randn(2, 3, 256)})
    with pytest.raises(ValueError, match="source 'lam' have width 128"):
        translator({"ttm": torch.randn(2, 3, 256), "lam": torch.randn(2, 3, 128)})
    with pytest.raises(ValueError, match="batch size 1"):
        translator({"ttm": torch.randn(2, 3, 256), "lam": torch.randn(1, 3, 256)})
    with pytest.raises(ValueError, match="unique names"):
        TaskTranslator([("a", 4), ("a", 4)], dim=8, num_heads=2)
    with pytest.raises(ValueError, match="max_tokens"):
        TaskTranslator([("a", 4)], dim=8, num_heads=2, style="hoi")
    with pytest.raises(ValueError, match="task_ids"):
        TaskTranslator([("a", 4), ("b", 4)], dim=8, num_heads=2, task_ids=[0])


def test_key_map_runs_as_checkpoint_steps_on_a_lightning_state_dict():
    checkpoint = pytest.importorskip("egot2.checkpoint")
    from egot2.translation import as_checkpoint_steps

    manifest = _manifest("oscc")
    lightning_state = {f"model.{key}": value for key, value in _official_translator_state(manifest).items()}
    lightning_state["model.pnr_model.s1.pathway0_stem.conv.weight"] = torch.zeros(1)  # a sub-model key
    steps = [checkpoint.SelectPrefix("model."), checkpoint.Drop(r"^\w+_model\."),
             *as_checkpoint_steps(official_translator_key_map("oscc", "load"))]
    translator = build_translator("oscc")
    checkpoint.load_state_dict_exact(translator, checkpoint.apply_key_map(lightning_state, steps))
    assert torch.equal(translator.heads[0].weight, lightning_state["model.linear_head.1.weight"])
